//! `stasis demo` on a real MariaDB: the same walk-through as [`crate::demo`], with a real
//! `mariadbd` whose data directory lives on a FUSE-mounted volume of the simulated ONTAP
//! cluster (what `ontap-sim serve --mount-root` does), the MySQL plugin, and the real
//! orchestrator reaching the simulator over ONTAP REST.
//!
//! The workload: concurrent writers insert rows into an InnoDB, a MyISAM and a
//! non-transactional Aria table, one autocommit statement each, and record the GTID the
//! server gave every acknowledged commit. A restore is checked row by row against that
//! record: exactly the acknowledged commits within the backup's GTID point, no more, no less.
//!
//! [`choose`] decides between this walk-through and the simulated database: MariaDB when
//! `mariadbd` and FUSE are usable, else simdb, with the reason.
//!
//! Every process and mount is owned by a guard ([`MariaDb`], [`SimWithMounts`]); fields are
//! declared so that servers stop before the mounts they run on go away, also when a step
//! fails or the future is dropped (Ctrl-C).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use mysql_async::prelude::Queryable;
use ontap_client::{OntapClient, SecretString};
use parking_lot::Mutex;
use serde::Serialize;
use stasis_core::catalog::Catalog;
use stasis_core::clock::SystemClock;
use stasis_core::domain::{AppKind, AppSpec, BackupRecord, BackupState, Consistency, ConsistencyPoint, Policy, RestoreMode, Schedule};
use stasis_core::plugins::mysql::{crash_recovery_ran, gtid_of, quote_identifier, MysqlConfig, MysqlPlugin, ServerControl};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::storage::VolumeInfo;
use stasis_core::workflow::{next_due, Orchestrator};

use crate::demo::{ClusterSummary, FreezeStats, Observer, StepReport, VolumeRow, STEP_NAMES};
use crate::mariadb::{self as mdb, MariaDb, MariaDbOptions, SimWithMounts};

// ---------------------------------------------------------------------------------------
// Embedded defaults
// ---------------------------------------------------------------------------------------

const CLUSTER_NAME: &str = "sim-a";
const SVM: &str = mdb::SVM;
const USERNAME: &str = "admin";
const APP_NAME: &str = "shop";
const VOLUME: &str = "shop_data";
const VOLUME_SIZE: u64 = 2 << 30;
/// The data directory inside the volume.
const DATA_SUBDIR: &str = "data";
/// A volume in the same SVM that does not belong to the app (discovery shows the difference).
const OTHER_VOLUME: &str = "web_content";
const OTHER_VOLUME_SIZE: u64 = 10 << 30;
const OTHER_VOLUME_FILL: u64 = 64 << 20;
const DATABASE: &str = "shop";
/// (table, engine clause, engine name): every engine is written all the time.
const TABLES: [(&str, &str, &str); 3] = [("orders", "ENGINE=InnoDB", "InnoDB"), ("events", "ENGINE=MyISAM", "MyISAM"), ("audit", "ENGINE=Aria TRANSACTIONAL=0", "Aria")];
/// The table the damage step drops.
const DROPPED_TABLE: &str = "orders";
const POLICY_NAME: &str = "hourly";
const POLICY_CRON: &str = "0 * * * *";
const POLICY_KEEP: u32 = 24;
/// The writers run this long before the first backup, so there is something in flight.
const WRITERS_WARM_UP: Duration = Duration::from_millis(300);
/// Pause between two backups (the writers keep committing).
const BACKUP_GAP: Duration = Duration::from_millis(150);
/// Writer ids of the second load (after the in-place restore) start here, so its rows
/// never collide with rows of the first.
const SECOND_LOAD_WRITER_BASE: u32 = 1000;
/// How long a new clone's mount may take to appear.
const MOUNT_WAIT_MAX: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct MariaDbDemoOptions {
    /// Application-consistent backups taken under load in the backup step.
    pub backups: u32,
    /// Rounds of the crash-vs-app comparison.
    pub crash_rounds: u32,
    /// Concurrent writer connections.
    pub writers: u32,
    /// The app's freeze bound.
    pub freeze_timeout: Duration,
    /// Seeds the simulator's uuids.
    pub seed: u64,
    /// Leave the simulator, its mounts and the server running (returned in the run).
    pub keep_running: bool,
}

impl Default for MariaDbDemoOptions {
    fn default() -> Self {
        MariaDbDemoOptions { backups: 5, crash_rounds: 2, writers: 4, freeze_timeout: Duration::from_secs(5), seed: 1, keep_running: false }
    }
}

// ---------------------------------------------------------------------------------------
// Choosing the workload
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
    mdb::check_prerequisites()?;
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

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

/// The same top-level shape as [`crate::demo::DemoReport`] (`ok`, `workload`, `steps`,
/// `freeze_window_ms`, `crash_vs_app`, `failover`), with MariaDB's own detail.
#[derive(Clone, Debug, Serialize)]
pub struct MariaDbDemoReport {
    /// True only if every verification passed.
    pub ok: bool,
    pub workload: &'static str,
    pub workload_note: String,
    pub server: Option<ServerSummary>,
    pub cluster: ClusterSummary,
    pub volumes: Vec<VolumeRow>,
    pub steps: Vec<StepReport>,
    /// Lock requested -> lock released, as the backup workflow recorded it (an upper bound
    /// on the time commits were blocked).
    pub freeze_window_ms: Option<FreezeStats>,
    pub backup: Option<BackupSummary>,
    pub damage: Option<DamageSummary>,
    pub restore: Option<RestoreSummary>,
    pub crash_vs_app: Option<CrashVsApp>,
    /// Disaster recovery for MariaDB is not built into the demo yet: null.
    pub failover: Option<serde_json::Value>,
    pub failover_note: String,
    pub not_built: Vec<&'static str>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServerSummary {
    pub version: String,
    pub port: u16,
    pub data_dir: String,
    pub volume: &'static str,
    pub tables: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackupSummary {
    pub taken: u32,
    pub application_consistent: u32,
    pub commits_acknowledged_during: usize,
    pub commits_after_last_backup: usize,
    pub backup_seconds_p50: f64,
    pub last_backup_id: String,
    pub last_consistency_point: String,
    pub last_snapshot: String,
    pub retention_expired: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct DamageSummary {
    pub dropped_table: String,
    pub rows_in_it: usize,
    pub acknowledged_commits_after_last_backup: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct RestoreSummary {
    pub backup_id: String,
    pub consistency_point: String,
    pub recovered_point: Option<String>,
    pub needed_crash_recovery: Option<bool>,
    pub rows: RowCheck,
    pub dropped_table_back: bool,
    pub server_answers: bool,
    pub exact: bool,
}

/// Restored rows against what the writers were told.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RowCheck {
    /// Acknowledged commits within the point: the rows that must be there.
    pub expected: usize,
    pub found: usize,
    /// Acknowledged within the point, missing.
    pub missing: usize,
    /// Acknowledged after the point, present.
    pub after_point: usize,
    /// Present but never written (or written with an unknown outcome: those are allowed).
    pub never_written: usize,
    /// Tables the restored server could not read.
    pub unreadable_tables: Vec<String>,
}

impl RowCheck {
    /// Exactly the acknowledged commits within the point, every table readable.
    pub fn exact(&self) -> bool {
        self.missing == 0 && self.after_point == 0 && self.never_written == 0 && self.unreadable_tables.is_empty()
    }
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
    /// `CHECK TABLE` clean, rows exactly the acknowledged commits within the recovered
    /// point, nothing acknowledged before the snapshot lost.
    pub exact: u32,
    pub needed_crash_recovery: u32,
    /// Restores in which `CHECK TABLE` reported a table crashed or not closed properly.
    pub tables_flagged: u32,
    /// Restores that lost at least one commit acknowledged before the snapshot.
    pub lost_acknowledged_commits: u32,
    /// Restores whose rows are not those of their own GTID point (an engine ahead of or
    /// behind the binary log).
    pub rows_off_their_point: u32,
    pub did_not_open: u32,
    pub results: Vec<RestoreOutcome>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RestoreOutcome {
    pub round: u32,
    pub snapshot: String,
    /// App: the backup's point. Crash: the last GTID acknowledged when the snapshot was asked for.
    pub claimed_point: String,
    pub recovered_point: Option<String>,
    pub needed_crash_recovery: Option<bool>,
    /// `CHECK TABLE` findings: `table: msg_type msg_text`.
    pub check_table: Vec<String>,
    pub rows: RowCheck,
    /// Acknowledged before the snapshot was asked for, missing from the restore.
    pub lost_acknowledged_commits: usize,
    pub exact: bool,
    pub error: Option<String>,
}

/// What is left running with `--keep-running`; dropping it stops everything.
pub struct KeptMariaDb {
    /// Lines to print: where everything is and how to reach it.
    pub info: Vec<String>,
    _demo: Box<dyn Send>,
}

pub struct MariaDbDemoRun {
    pub report: MariaDbDemoReport,
    pub kept: Option<KeptMariaDb>,
}

// ---------------------------------------------------------------------------------------
// The workload: writers that record every acknowledged GTID
// ---------------------------------------------------------------------------------------

/// (table, writer, n): one row, written by one autocommit INSERT.
type RowKey = (&'static str, u32, u32);

/// What the writers were told: rows whose commit was acknowledged, with the GTID sequence
/// number it got, and rows whose statement failed (committed or not: unknown).
#[derive(Clone, Debug, Default)]
struct History {
    acked: BTreeMap<RowKey, u64>,
    unknown: BTreeSet<RowKey>,
}

impl History {
    fn merge(&mut self, other: &History) {
        self.acked.extend(other.acked.iter().map(|(k, v)| (*k, *v)));
        self.unknown.extend(other.unknown.iter().copied());
    }

    fn max_seq(&self) -> u64 {
        self.acked.values().copied().max().unwrap_or(0)
    }

    /// Compare `rows` (read from the tables in `readable`) with the commits within GTID
    /// sequence number `limit`.
    fn check(&self, rows: &BTreeSet<RowKey>, readable: &[&str], limit: u64) -> RowCheck {
        let mut check = RowCheck { found: rows.len(), ..RowCheck::default() };
        for (key, seq) in self.acked.iter().filter(|(k, _)| readable.contains(&k.0)) {
            let present = rows.contains(key);
            if *seq <= limit {
                check.expected += 1;
                check.missing += usize::from(!present);
            } else {
                check.after_point += usize::from(present);
            }
        }
        check.never_written = rows.iter().filter(|k| !self.acked.contains_key(*k) && !self.unknown.contains(*k)).count();
        check
    }
}

/// The sequence number of a single-domain GTID position `0-1-42` (the last of a list).
fn gtid_seq(gtid: &str) -> Option<u64> {
    gtid.split(',').map(str::trim).filter(|g| !g.is_empty()).last().and_then(|g| g.rsplit('-').next()).and_then(|s| s.parse().ok())
}

fn point_seq(point: &ConsistencyPoint) -> Option<u64> {
    gtid_seq(gtid_of(point))
}

/// Concurrent writers; each stops at its first failed statement (recorded as unknown).
struct Writers {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    log: Arc<Mutex<History>>,
}

impl Writers {
    async fn start(server: &MariaDb, password: &str, n_writers: u32, first_writer: u32) -> anyhow::Result<Writers> {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let log = Arc::new(Mutex::new(History::default()));
        let mut tasks = Vec::new();
        for writer in first_writer..first_writer + n_writers {
            let mut conn = server.app_conn(password, Some(DATABASE)).await.context("connecting a writer")?;
            let (stop, failures, log) = (stop.clone(), failures.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let table = TABLES[(n % 3) as usize].0;
                    let key = (table, writer, n);
                    let result = async {
                        conn.exec_drop(format!("INSERT INTO {} (writer, n, payload) VALUES (?, ?, ?)", quote_identifier(table)), (writer, n, format!("w{writer}-n{n}-{}", "x".repeat(100)))).await?;
                        conn.query_first::<String, _>("SELECT @@last_gtid").await
                    }
                    .await;
                    match result.map(|gtid| gtid.as_deref().and_then(gtid_seq)) {
                        Ok(Some(seq)) => {
                            log.lock().acked.insert(key, seq);
                        }
                        Ok(None) | Err(_) => {
                            log.lock().unknown.insert(key);
                            failures.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
                let _ = conn.disconnect().await;
            }));
        }
        Ok(Writers { stop, failures, tasks, log })
    }

    /// The history so far (the writers keep going).
    fn history(&self) -> History {
        self.log.lock().clone()
    }

    async fn stop(mut self) -> (History, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        (self.log.lock().clone(), self.failures.load(Ordering::Relaxed))
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading a (restored) server
// ---------------------------------------------------------------------------------------

/// What a server holds: its GTID position, every workload row it can read, the tables it
/// cannot read, and `CHECK TABLE` findings.
struct ServerState {
    gtid: String,
    rows: BTreeSet<RowKey>,
    readable: Vec<&'static str>,
    unreadable: Vec<String>,
    findings: Vec<String>,
}

async fn read_server(conn: &mut mysql_async::Conn) -> anyhow::Result<ServerState> {
    let gtid: Option<String> = conn.query_first("SELECT @@gtid_binlog_pos").await.context("reading @@gtid_binlog_pos")?;
    let mut state = ServerState { gtid: gtid.unwrap_or_default(), rows: BTreeSet::new(), readable: Vec::new(), unreadable: Vec::new(), findings: Vec::new() };
    for (table, _, _) in TABLES {
        let name = format!("{}.{}", quote_identifier(DATABASE), quote_identifier(table));
        // Rows: Table, Op, Msg_type, Msg_text. Anything but `status OK` alone is a finding.
        match conn.query::<(String, String, String, String), _>(format!("CHECK TABLE {name}")).await {
            Ok(rows) => {
                for r in rows.iter().filter(|r| !(r.2 == "status" && r.3 == "OK")) {
                    state.findings.push(format!("{table}: {} {}", r.2, r.3));
                }
            }
            Err(e) => state.findings.push(format!("{table}: CHECK TABLE failed: {e}")),
        }
        match conn.query::<(u32, u32), _>(format!("SELECT writer, n FROM {name}")).await {
            Ok(found) => {
                state.rows.extend(found.into_iter().map(|(w, n)| (table, w, n)));
                state.readable.push(table);
            }
            Err(e) => state.unreadable.push(format!("{table}: {e}")),
        }
    }
    Ok(state)
}

// ---------------------------------------------------------------------------------------
// The demo
// ---------------------------------------------------------------------------------------

struct Verdict {
    ok: bool,
    summary: String,
}

/// Field order is drop order: writers and servers before the plugin and the mounts.
struct Demo<'a> {
    writers: Option<Writers>,
    server: MariaDb,
    opts: MariaDbDemoOptions,
    obs: &'a dyn Observer,
    sim_password: String,
    app_password: String,
    plugin: Arc<MysqlPlugin>,
    storage: Arc<OntapClient>,
    catalog: Arc<SqliteCatalog>,
    orchestrator: Orchestrator,
    app: AppSpec,
    policy: Policy,
    app_volume: Option<VolumeInfo>,
    /// Everything acknowledged on the current timeline (cut back by the in-place restore).
    history: History,
    last_backup: Option<BackupRecord>,
    report: MariaDbDemoReport,
    sim: SimWithMounts,
    _catalog_dir: tempfile::TempDir,
}

/// Run the MariaDB walk-through. `Err` only when it could not be set up (then nothing it
/// started is left running); a failing step is reported and makes `ok` false.
pub async fn run(opts: &MariaDbDemoOptions, obs: &dyn Observer) -> anyhow::Result<MariaDbDemoRun> {
    if opts.backups == 0 || opts.crash_rounds == 0 || opts.writers == 0 {
        bail!("the MariaDB demo needs at least one backup, one crash-vs-app round and one writer");
    }
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
    if let Some(w) = demo.writers.take() {
        w.stop().await;
    }
    obs.say("");
    obs.say(&format!("[-] failover: {}", demo.report.failover_note));
    demo.report.ok = demo.report.steps.iter().all(|s| s.ok);
    demo.report.seconds = started.elapsed().as_secs_f64();
    demo.summary();
    let report = demo.report.clone();
    let kept = if opts.keep_running {
        let info = demo.kept_info();
        Some(KeptMariaDb { info, _demo: Box::new(KeepAlive { _parts: demo.into_parts() }) })
    } else {
        let Demo { server, .. } = demo;
        // A clean shutdown first; the guards kill and unmount whatever is left.
        let _ = server.shutdown().await;
        None
    };
    Ok(MariaDbDemoRun { report, kept })
}

/// What `--keep-running` holds on to, in drop order.
struct KeepAlive {
    _parts: (MariaDb, Arc<MysqlPlugin>, Orchestrator, SimWithMounts, tempfile::TempDir),
}

impl<'a> Demo<'a> {
    async fn setup(opts: MariaDbDemoOptions, obs: &'a dyn Observer) -> anyhow::Result<Demo<'a>> {
        mariadb_available()?;
        let sim_password = format!("demo-{:016x}", rand::random::<u64>());
        let app_password = format!("app-{:016x}", rand::random::<u64>());
        obs.say("Stasis demo: application-consistent backup and restore of a real MariaDB on (simulated) NetApp ONTAP");
        obs.say("  setting up: simulated cluster, FUSE mounts, mariadb-install-db and mariadbd on the volume ...");
        let sim = SimWithMounts::start(opts.seed, &sim_password).await.context("starting the simulated ONTAP cluster with FUSE mounts")?;
        let (_, mount_point) = sim.create_volume(VOLUME, VOLUME_SIZE).await.context("creating the app's volume")?;
        let (other_uuid, _) = sim.create_volume(OTHER_VOLUME, OTHER_VOLUME_SIZE).await.context("creating the web_content volume")?;
        sim.sim().sim().fill(&other_uuid, "site/assets.bin", OTHER_VOLUME_FILL, opts.seed).map_err(|e| anyhow!("{e}")).context("writing sample data to web_content")?;
        let data_dir = mount_point.join(DATA_SUBDIR);
        let server = MariaDb::install_and_start(&data_dir, &app_password, MariaDbOptions::default()).await.context("installing and starting mariadbd on the simulated volume")?;
        let mut conn = server.app_conn(&app_password, None).await?;
        conn.query_drop(format!("CREATE DATABASE {}", quote_identifier(DATABASE))).await.context("creating the database")?;
        for (table, engine, _) in TABLES {
            conn.query_drop(format!(
                "CREATE TABLE {}.{} (writer INT NOT NULL, n INT NOT NULL, payload VARCHAR(200) NOT NULL, PRIMARY KEY (writer, n)) {engine}",
                quote_identifier(DATABASE),
                quote_identifier(table)
            ))
            .await
            .with_context(|| format!("creating table {table}"))?;
        }
        let version: String = conn.query_first("SELECT @@version").await?.unwrap_or_default();
        conn.disconnect().await?;

        let config = MysqlConfig {
            host: "127.0.0.1".into(),
            port: server.port(),
            user: mdb::APP_USER.into(),
            password: SecretString::from(app_password.clone()),
            freeze_timeout: opts.freeze_timeout,
            lock_wait_timeout: Duration::from_secs(2).min(opts.freeze_timeout / 2),
            server_control: Some(ServerControl {
                stop_command: server.stop_command()?,
                start_command: server.start_command()?,
                mount_root: sim.mount_root(),
                data_subdir: DATA_SUBDIR.into(),
                instance_command: mdb::instance_command(&MariaDbOptions::default())?,
                start_wait: mdb::START_WAIT_MAX,
            }),
        };
        let plugin = Arc::new(MysqlPlugin::new(config).map_err(|e| anyhow!("{e}"))?);
        let catalog_dir = tempfile::Builder::new().prefix("stasis-demo-").tempdir().context("creating a temporary directory for the catalog")?;
        let catalog_path = catalog_dir.path().join("catalog.sqlite");
        let catalog = Arc::new(SqliteCatalog::open(&catalog_path).with_context(|| format!("opening the catalog {}", catalog_path.display()))?);
        let storage = Arc::new(OntapClient::new(crate::torture::world::client_config(&sim.base_url(), &sim_password, Duration::from_secs(10))).context("configuring the ONTAP REST client")?);
        let orchestrator = Orchestrator::new(storage.clone(), catalog.clone(), Arc::new(SystemClock));
        let app = AppSpec { name: APP_NAME.into(), kind: AppKind::Mysql, svm: SVM.into(), volumes: vec![VOLUME.into()], freeze_timeout: opts.freeze_timeout };
        let policy = Policy { name: POLICY_NAME.into(), schedule: Schedule::Cron { expr: POLICY_CRON.into() }, keep_last: Some(POLICY_KEEP), max_age: None };
        let report = MariaDbDemoReport {
            ok: false,
            workload: "mariadb",
            workload_note: format!("a real MariaDB ({version}) whose data directory is on the FUSE-mounted simulated volume {VOLUME}; writers insert into InnoDB, MyISAM and Aria tables"),
            server: Some(ServerSummary {
                version,
                port: server.port(),
                data_dir: data_dir.display().to_string(),
                volume: VOLUME,
                tables: TABLES.iter().map(|(t, _, e)| format!("{DATABASE}.{t} ({e})")).collect(),
            }),
            cluster: ClusterSummary { name: CLUSTER_NAME, site: "A", url: sim.base_url(), svm: SVM },
            volumes: Vec::new(),
            steps: Vec::new(),
            freeze_window_ms: None,
            backup: None,
            damage: None,
            restore: None,
            crash_vs_app: None,
            failover: None,
            failover_note: "not yet for MariaDB: replicate to site B -> unplanned failover -> a second mariadbd on site B is not part of this walk-through yet".into(),
            not_built: vec!["failover for the MariaDB workload (site B, SnapMirror)"],
            seconds: 0.0,
        };
        Ok(Demo {
            writers: None,
            server,
            opts,
            obs,
            sim_password,
            app_password,
            plugin,
            storage,
            catalog,
            orchestrator,
            app,
            policy,
            app_volume: None,
            history: History::default(),
            last_backup: None,
            report,
            sim,
            _catalog_dir: catalog_dir,
        })
    }

    fn into_parts(self) -> (MariaDb, Arc<MysqlPlugin>, Orchestrator, SimWithMounts, tempfile::TempDir) {
        (self.server, self.plugin, self.orchestrator, self.sim, self._catalog_dir)
    }

    fn kept_info(&self) -> Vec<String> {
        let url = self.sim.base_url();
        vec![
            String::new(),
            "Still running (Ctrl-C stops the server, unmounts the volumes and stops the simulator):".into(),
            format!("  ONTAP REST  {url}   user {USERNAME}, password {}   (generated for this run)", self.sim_password),
            format!("  MariaDB     127.0.0.1:{}   user {}, password {}   database {DATABASE}", self.server.port(), mdb::APP_USER, self.app_password),
            format!("  mounts      {}   (each volume at its junction path, .snapshot/ inside)", self.sim.mount_root().display()),
            "  try:".into(),
            format!("    curl -s -u '{USERNAME}:{}' '{url}/api/storage/volumes?fields=name,nas.path,space.size,space.used'", self.sim_password),
            format!("    mariadb -h 127.0.0.1 -P {} -u {} -p'{}' {DATABASE} -e 'SELECT COUNT(*) FROM orders'", self.server.port(), mdb::APP_USER, self.app_password),
        ]
    }

    fn say(&self, line: impl AsRef<str>) {
        match line.as_ref() {
            "" => self.obs.say(""),
            line => self.obs.say(&format!("      {line}")),
        }
    }

    fn intro(&self) {
        let o = self.obs;
        let server = self.report.server.as_ref();
        o.say("");
        o.say(&format!("  workload  MariaDB {} (a real mariadbd, port {}), data directory on the simulated volume", server.map_or("", |s| s.version.as_str()), self.server.port()));
        o.say(&format!("            {VOLUME}, FUSE-mounted at {}", self.sim.mount_root().join(VOLUME).display()));
        o.say(&format!("            {} writers insert into {DATABASE}.orders (InnoDB), {DATABASE}.events (MyISAM), {DATABASE}.audit (Aria),", self.opts.writers));
        o.say("            recording the GTID of every acknowledged commit.");
        o.say(&format!("  array     simulated ONTAP cluster {CLUSTER_NAME} (site A), in this process, ONTAP REST at {}", self.sim.base_url()));
        o.say(&format!("  catalog   SQLite in a temporary directory (removed at exit); freeze bound {} ms", self.opts.freeze_timeout.as_millis()));
        o.say("  Not yet for MariaDB: failover to site B (replicate, unplanned failover, verify).");
    }

    fn headline(&self, step: &str) -> String {
        match step {
            "discover" => format!("discover: the volumes of SVM {SVM}, read through the ONTAP REST client"),
            "protect" => format!("protect: record app {APP_NAME} (kind mysql) and an SLA policy in the catalog"),
            "backup" => format!("backup under write load: {} application-consistent backups while {} writers commit", self.opts.backups, self.opts.writers),
            "damage" => format!("damage: DROP TABLE {DATABASE}.{DROPPED_TABLE}"),
            "restore" => "restore in place to the last backup (stop, SnapRestore, start), then verify every row".into(),
            "crash_vs_app" => format!("crash-consistent vs application-consistent, {} rounds under write load", self.opts.crash_rounds),
            other => other.to_string(),
        }
    }

    // ---- 1. discover ----

    async fn discover(&mut self) -> anyhow::Result<Verdict> {
        // The Storage seam has no "list every volume" call yet: the names come from the
        // simulator, every detail below is read over ONTAP REST by the client.
        let names: Vec<String> = self.sim.sim().sim().read(|s| s.volumes_in_order().into_iter().filter(|v| v.svm.name == SVM).map(|v| v.name.clone()).collect());
        let infos = self.storage.volumes_by_name(SVM, &names).await.context("reading the SVM's volumes over ONTAP REST")?;
        let role = |name: &str| (name == VOLUME).then_some("data");
        self.say(format!("{:<13} {:<14} {:>8} {:>9} {:>9}  {}", "VOLUME", "JUNCTION PATH", "SIZE", "USED", "SNAPSHOTS", "APP"));
        for v in &infos {
            self.say(format!(
                "{:<13} {:<14} {:>8} {:>9} {:>9}  {}",
                v.name,
                v.junction_path.as_deref().unwrap_or("-"),
                crate::demo::human_bytes(v.size_bytes),
                crate::demo::human_bytes(v.used_bytes),
                v.n_snapshots,
                role(&v.name).map_or("-".to_string(), |r| format!("{APP_NAME} ({r}: the mariadbd data directory)"))
            ));
        }
        self.report.volumes = infos
            .iter()
            .map(|v| VolumeRow { name: v.name.clone(), junction_path: v.junction_path.clone(), size_bytes: v.size_bytes, used_bytes: v.used_bytes, snapshots: v.n_snapshots, app_role: role(&v.name) })
            .collect();
        let volume = infos.iter().find(|v| v.name == VOLUME).cloned().ok_or_else(|| anyhow!("the app's volume {VOLUME} was not discovered"))?;
        // The server's own idea of its data directory must be on that volume's mount.
        let mut conn = self.server.app_conn(&self.app_password, None).await?;
        let datadir: String = conn.query_first("SELECT @@datadir").await?.unwrap_or_default();
        conn.disconnect().await?;
        let on_volume = PathBuf::from(datadir.trim_end_matches('/')).starts_with(self.sim.mount_root().join(VOLUME));
        self.say(format!("mariadbd reports datadir {datadir}: {}", if on_volume { format!("on volume {VOLUME}") } else { "NOT on the app's volume".into() }));
        let ok = on_volume && volume.online && volume.writable && volume.junction_path.is_some() && volume.used_bytes > 0;
        self.app_volume = Some(volume);
        Ok(Verdict { ok, summary: format!("{} volumes, 1 holds app {APP_NAME}'s data directory (online, writable, mounted)", infos.len()) })
    }

    // ---- 2. protect ----

    async fn protect(&mut self) -> anyhow::Result<Verdict> {
        self.catalog.put_policy(&self.policy).context("storing the policy")?;
        self.catalog.put_app(&self.app).context("storing the app")?;
        self.catalog.set_app_policy(APP_NAME, Some(POLICY_NAME)).context("assigning the policy")?;
        let ok = self.catalog.app(APP_NAME)?.as_ref() == Some(&self.app) && self.catalog.policy(POLICY_NAME)?.as_ref() == Some(&self.policy) && self.catalog.app_policy(APP_NAME)?.as_deref() == Some(POLICY_NAME);
        let next = next_due(&self.policy.schedule, None, chrono::Utc::now()).map_err(|e| anyhow!(e)).context("computing the next scheduled backup")?;
        self.say(format!("app     {APP_NAME}: kind mysql (BACKUP STAGE lock), SVM {SVM}, volume {VOLUME}, freeze bound {} ms", self.app.freeze_timeout.as_millis()));
        self.say(format!("policy  {POLICY_NAME}: cron \"{POLICY_CRON}\", keep the last {POLICY_KEEP} backups"));
        self.say(format!("next scheduled backup {} UTC (this demo takes its backups now, on demand)", next.format("%H:%M")));
        Ok(Verdict { ok, summary: format!("app {APP_NAME} and policy {POLICY_NAME} (hourly, keep {POLICY_KEEP}) stored and read back") })
    }

    // ---- 3. backup under load ----

    async fn backup(&mut self) -> anyhow::Result<Verdict> {
        self.writers = Some(Writers::start(&self.server, &self.app_password, self.opts.writers, 0).await?);
        tokio::time::sleep(WRITERS_WARM_UP).await;
        let acked_before = self.writers.as_ref().map_or(0, |w| w.history().acked.len());
        let n = self.opts.backups;
        let (mut windows, mut durations, mut problems) = (Vec::new(), Vec::new(), Vec::new());
        let mut app_consistent = 0;
        for i in 0..n {
            self.obs.progress("backups", u64::from(i), u64::from(n));
            let started = Instant::now();
            let record = self.orchestrator.backup(&self.app, self.plugin.clone()).await.with_context(|| format!("backup {} of {n}", i + 1))?.record;
            durations.push(started.elapsed().as_secs_f64());
            let holds = record.evidence.holds(&record.snapshots);
            let point = record.evidence.consistency_point.as_ref().and_then(point_seq);
            if let (Some(requested), Some(released)) = (record.evidence.lock_requested, record.evidence.lock_released) {
                windows.push((released - requested).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
            }
            if record.state == BackupState::Complete && record.consistency == Some(Consistency::Application) && holds.is_ok() && point.is_some() {
                app_consistent += 1;
            } else {
                problems.push(format!("backup {} is {:?}/{:?}, evidence {holds:?}, GTID point {point:?}", record.id, record.state, record.consistency));
            }
            self.last_backup = Some(record);
            tokio::time::sleep(BACKUP_GAP).await;
        }
        self.obs.progress("backups", u64::from(n), u64::from(n));
        let history = self.writers.as_ref().map(Writers::history).unwrap_or_default();
        let failures = self.writers.as_ref().map_or(0, |w| w.failures.load(Ordering::Relaxed));
        windows.sort_by(|a, b| a.total_cmp(b));
        durations.sort_by(|a, b| a.total_cmp(b));
        let stats = FreezeStats {
            p50: crate::demo::percentile(&windows, 0.5),
            p99: crate::demo::percentile(&windows, 0.99),
            max: windows.last().copied().unwrap_or(0.0),
            samples: windows.len(),
            bound_ms: self.opts.freeze_timeout.as_millis() as u64,
        };
        let retention = self.orchestrator.apply_retention(&self.app, &self.policy).await.context("applying the retention policy")?;
        let last = self.last_backup.clone().ok_or_else(|| anyhow!("no backup was taken"))?;
        let last_point = last.evidence.consistency_point.clone().ok_or_else(|| anyhow!("the last backup has no consistency point"))?;
        let last_seq = point_seq(&last_point).unwrap_or(0);
        // Commits after the last backup's point prove the server was thawed (and give the
        // restore something to discard).
        let after_last = history.acked.values().filter(|s| **s > last_seq).count();
        self.say(format!("{app_consistent}/{n} complete and application-consistent (BACKUP STAGE START/BLOCK_COMMIT -> snapshot -> BACKUP STAGE END)"));
        self.say(format!("acknowledged commits while backing up: {}; writer statements failed: {failures}", history.acked.len() - acked_before));
        self.say(format!("freeze window (lock requested -> released, as the workflow recorded it): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (bound {} ms)", stats.p50, stats.p99, stats.max, stats.bound_ms));
        self.say(format!("backup workflow time: p50 {:.0} ms", crate::demo::percentile(&durations, 0.5) * 1000.0));
        self.say(format!("last backup {}: snapshot {} at consistency point {last_point}", last.id, last.snapshot_name));
        self.say(format!("{after_last} commits acknowledged after it (the writers went on: the lock was released)"));
        self.say(format!("retention ({POLICY_KEEP} kept): {} expired", retention.expired.len()));
        for p in &problems {
            self.say(format!("PROBLEM: {p}"));
        }
        let within_bound = stats.max <= stats.bound_ms as f64;
        let ok = app_consistent == n && stats.samples == n as usize && within_bound && failures == 0 && after_last > 0;
        let summary = format!("{app_consistent}/{n} application-consistent under load; freeze p50 {:.1} ms, p99 {:.1} ms", stats.p50, stats.p99);
        self.report.freeze_window_ms = Some(stats);
        self.report.backup = Some(BackupSummary {
            taken: n,
            application_consistent: app_consistent,
            commits_acknowledged_during: history.acked.len() - acked_before,
            commits_after_last_backup: after_last,
            backup_seconds_p50: crate::demo::percentile(&durations, 0.5),
            last_backup_id: last.id.clone(),
            last_consistency_point: last_point.0.clone(),
            last_snapshot: last.snapshot_name.clone(),
            retention_expired: retention.expired.len(),
        });
        Ok(Verdict { ok, summary })
    }

    // ---- 4. damage ----

    async fn damage(&mut self) -> anyhow::Result<Verdict> {
        let writers = self.writers.take().ok_or_else(|| anyhow!("the writers are not running"))?;
        let (history, failures) = writers.stop().await;
        self.history = history;
        let last = self.last_backup.clone().ok_or_else(|| anyhow!("no backup to compare with"))?;
        let last_seq = last.evidence.consistency_point.as_ref().and_then(point_seq).ok_or_else(|| anyhow!("the last backup has no GTID point"))?;
        let after = self.history.acked.values().filter(|s| **s > last_seq).count();
        self.say(format!("writers stopped: {} commits acknowledged in all ({failures} statements failed)", self.history.acked.len()));
        let mut conn = self.server.app_conn(&self.app_password, Some(DATABASE)).await?;
        let table = quote_identifier(DROPPED_TABLE);
        let rows: Option<u64> = conn.query_first(format!("SELECT COUNT(*) FROM {table}")).await?;
        conn.query_drop(format!("DROP TABLE {table}")).await.context("dropping the table")?;
        let gone = matches!(conn.query_drop(format!("SELECT 1 FROM {table} LIMIT 1")).await, Err(mysql_async::Error::Server(e)) if e.code == 1146);
        conn.disconnect().await?;
        let rows = rows.unwrap_or(0) as usize;
        self.say(format!("DROP TABLE {DATABASE}.{DROPPED_TABLE}: {rows} rows gone; a SELECT now fails with error 1146 (table doesn't exist): {gone}"));
        self.say(format!("{after} commits were acknowledged after the last backup; an in-place restore discards them"));
        self.report.damage = Some(DamageSummary { dropped_table: format!("{DATABASE}.{DROPPED_TABLE}"), rows_in_it: rows, acknowledged_commits_after_last_backup: after });
        Ok(Verdict { ok: gone && rows > 0, summary: format!("{DATABASE}.{DROPPED_TABLE} dropped ({rows} rows)") })
    }

    // ---- 5. restore in place ----

    async fn restore(&mut self) -> anyhow::Result<Verdict> {
        let last = self.last_backup.clone().ok_or_else(|| anyhow!("no backup to restore"))?;
        let point = last.evidence.consistency_point.clone().ok_or_else(|| anyhow!("the last backup has no consistency point"))?;
        let seq = point_seq(&point).ok_or_else(|| anyhow!("consistency point {point} has no GTID"))?;
        let record = self.orchestrator.restore_in_place(&self.app, &last.id, self.plugin.clone()).await.with_context(|| format!("restoring backup {} in place", last.id))?;
        let answers = self.plugin.answers().await;
        let mut conn = self.server.app_conn(&self.app_password, None).await.context("connecting to the restored server")?;
        let state = read_server(&mut conn).await?;
        conn.disconnect().await?;
        let mut rows = self.history.check(&state.rows, &state.readable, seq);
        rows.unreadable_tables = state.unreadable.clone();
        let dropped_back = state.readable.contains(&DROPPED_TABLE) && state.rows.iter().any(|r| r.0 == DROPPED_TABLE);
        let point_matches = record.recovered_point.as_ref() == Some(&point);
        self.say(format!("stopped mariadbd (mariadb-admin shutdown), SnapRestore of {VOLUME} to {}, recovery check, started it again", last.snapshot_name));
        self.say(format!(
            "recovered point {} (backup's point {point}); crash recovery at start: {}",
            record.recovered_point.as_ref().map_or("none".into(), |p| p.0.clone()),
            match record.needed_crash_recovery {
                Some(true) => "yes (InnoDB applied its redo log)",
                Some(false) => "no",
                None => "unknown",
            }
        ));
        self.say(format!(
            "rows: {} found, {} expected (every commit acknowledged within GTID {seq}); missing {}, after the point {}, never written {}",
            rows.found, rows.expected, rows.missing, rows.after_point, rows.never_written
        ));
        self.say(format!("{DATABASE}.{DROPPED_TABLE} is back: {dropped_back}; CHECK TABLE: {}", if state.findings.is_empty() { "all OK".to_string() } else { state.findings.join(" | ") }));
        // The timeline is cut back to the point: later GTID sequence numbers will be reused.
        self.history.acked.retain(|_, s| *s <= seq);
        let exact = rows.exact() && point_matches && state.findings.is_empty();
        let ok = exact && dropped_back && answers;
        self.report.restore = Some(RestoreSummary {
            backup_id: last.id.clone(),
            consistency_point: point.0.clone(),
            recovered_point: record.recovered_point.as_ref().map(|p| p.0.clone()),
            needed_crash_recovery: record.needed_crash_recovery,
            rows: rows.clone(),
            dropped_table_back: dropped_back,
            server_answers: answers,
            exact,
        });
        let summary = if ok {
            format!("exact at GTID {seq}: {} rows, the dropped table back, server up", rows.found)
        } else {
            format!("NOT exact at GTID {seq} (rows exact: {}, point recorded: {point_matches}, table back: {dropped_back}, server answers: {answers})", rows.exact())
        };
        Ok(Verdict { ok, summary })
    }

    // ---- 6. crash-consistent vs application-consistent ----

    async fn crash_vs_app(&mut self) -> anyhow::Result<Verdict> {
        self.say("crash: an array snapshot over ONTAP REST with NO quiesce while the writers run (like a storage");
        self.say("       snapshot policy), FlexCloned, a second mariadbd started on the clone");
        self.say("app:   Stasis's backup workflow (BACKUP STAGE lock, snapshot, unlock), restored to a FlexClone by");
        self.say("       restore_to_clone (the plugin's checks), then the same second mariadbd on the clone");
        self.writers = Some(Writers::start(&self.server, &self.app_password, self.opts.writers, SECOND_LOAD_WRITER_BASE).await?);
        tokio::time::sleep(WRITERS_WARM_UP).await;
        let rounds = self.opts.crash_rounds;
        let (mut crash, mut app) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            self.obs.progress("rounds", u64::from(round - 1), u64::from(rounds));
            crash.push(self.crash_round(round).await.with_context(|| format!("crash-consistent round {round}"))?);
            app.push(self.app_round(round).await.with_context(|| format!("application-consistent round {round}"))?);
        }
        self.obs.progress("rounds", u64::from(rounds), u64::from(rounds));
        if let Some(w) = self.writers.take() {
            let (history, _) = w.stop().await;
            self.history.merge(&history);
        }
        self.say("");
        self.say(format!("{:<5} {:<6} {:>10} {:>10} {:>9} {:>6} {:>6}  {}", "ROUND", "KIND", "POINT", "RECOVERED", "CRASH REC", "LOST", "ROWS", "STATE"));
        for (c, a) in crash.iter().zip(&app) {
            for (kind, r) in [("crash", c), ("app", a)] {
                self.say(format!(
                    "{:<5} {:<6} {:>10} {:>10} {:>9} {:>6} {:>6}  {}",
                    r.round,
                    kind,
                    short_gtid(&r.claimed_point),
                    r.recovered_point.as_deref().map_or("-".into(), short_gtid),
                    match r.needed_crash_recovery {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "-",
                    },
                    r.lost_acknowledged_commits,
                    r.rows.found,
                    state_text(r)
                ));
            }
        }
        let crash = summarize("array snapshot without quiesce, FlexClone, mariadbd on the clone", crash);
        let app = summarize("Stasis backup (BACKUP STAGE lock), restore_to_clone, mariadbd on the clone", app);
        self.say("");
        self.say(format!(
            "crash-consistent:       {}/{} exact; {} needed crash recovery; {} with tables flagged by CHECK TABLE; {} lost acknowledged commits; {} rows off their own GTID point",
            crash.exact, crash.restores, crash.needed_crash_recovery, crash.tables_flagged, crash.lost_acknowledged_commits, crash.rows_off_their_point
        ));
        self.say(format!(
            "application-consistent: {}/{} exact at their GTID point; {} with tables flagged; {} lost acknowledged commits",
            app.exact, app.restores, app.tables_flagged, app.lost_acknowledged_commits
        ));
        let ok = app.exact == app.restores && app.restores == rounds;
        let summary = format!(
            "crash: {}/{} exact, {} with tables flagged, {} needed crash recovery; app: {}/{} exact",
            crash.exact, crash.restores, crash.tables_flagged, crash.needed_crash_recovery, app.exact, app.restores
        );
        self.report.crash_vs_app = Some(CrashVsApp { rounds, crash, app });
        Ok(Verdict { ok, summary })
    }

    /// Everything acknowledged on this timeline so far (the running writers included).
    fn history_now(&self) -> History {
        let mut h = self.history.clone();
        if let Some(w) = &self.writers {
            h.merge(&w.history());
        }
        h
    }

    /// Start a second mariadbd on a clone's data directory, read it, stop it.
    async fn open_clone(&self, clone_name: &str) -> anyhow::Result<(ServerState, bool)> {
        let junction = format!("/{clone_name}");
        let data_dir = self.sim.mounts().mount_point(&junction).join(DATA_SUBDIR);
        let started = Instant::now();
        while !data_dir.is_dir() {
            if let Some(e) = self.sim.mounts().reconcile().into_iter().next() {
                return Err(e.context(format!("mounting {junction}")));
            }
            if started.elapsed() > MOUNT_WAIT_MAX {
                bail!("the clone's data directory {} did not appear within {MOUNT_WAIT_MAX:?}", data_dir.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let second = MariaDb::start(&data_dir, MariaDbOptions::default()).await.with_context(|| format!("starting a second mariadbd on {}", data_dir.display()))?;
        let state = async {
            let mut conn = second.root_conn().await?;
            let state = read_server(&mut conn).await;
            let _ = conn.disconnect().await;
            state
        }
        .await;
        let crash_recovery = crash_recovery_ran(&second.error_log());
        second.shutdown().await?;
        Ok((state?, crash_recovery))
    }

    /// Snapshot the volume over REST with no quiesce, clone it, open it with a second server.
    async fn crash_round(&mut self, round: u32) -> anyhow::Result<RestoreOutcome> {
        let volume = self.app_volume.clone().ok_or_else(|| anyhow!("the app's volume was not discovered"))?;
        let name = format!("demo_crash_{round:02}");
        let acked = self.history_now();
        let claimed = acked.max_seq();
        let snapshot = self.storage.create_snapshot(&volume.uuid, &name, Duration::from_secs(10)).await.context("taking the crash-consistent snapshot")?;
        let clone_name = format!("{VOLUME}_crash{round:02}");
        let clone = self.storage.clone_volume(&volume.uuid, &name, &clone_name, Some(&format!("/{clone_name}"))).await.with_context(|| format!("cloning {VOLUME} from {name}"))?;
        let opened = self.open_clone(&clone_name).await;
        self.storage.delete_volume(&clone.uuid).await.with_context(|| format!("deleting clone {clone_name}"))?;
        self.storage.delete_snapshot(&volume.uuid, &snapshot.uuid).await.with_context(|| format!("deleting snapshot {name}"))?;
        let mut out = empty_outcome(round, name, format!("gtid=0-1-{claimed}"));
        let (state, crash_recovery) = match opened {
            Ok(o) => o,
            Err(e) => {
                out.error = Some(format!("{e:#}"));
                return Ok(out);
            }
        };
        // Judge against everything acknowledged by now: rows acknowledged after the request
        // may be in the snapshot, and must then be within the clone's own point.
        let history = self.history_now();
        let own_seq = gtid_seq(&state.gtid).unwrap_or(0);
        out.recovered_point = Some(format!("gtid={}", state.gtid));
        out.needed_crash_recovery = Some(crash_recovery);
        out.rows = history.check(&state.rows, &state.readable, own_seq);
        out.rows.unreadable_tables = state.unreadable;
        out.lost_acknowledged_commits = acked.acked.keys().filter(|k| state.readable.contains(&k.0) && !state.rows.contains(*k)).count();
        out.check_table = state.findings;
        out.exact = out.rows.exact() && out.check_table.is_empty() && out.lost_acknowledged_commits == 0 && own_seq >= claimed;
        Ok(out)
    }

    /// One backup through the workflow, restored to a clone by the workflow, opened by a
    /// second server the same way as the crash side, and the clone deleted.
    async fn app_round(&mut self, round: u32) -> anyhow::Result<RestoreOutcome> {
        let record = self.orchestrator.backup(&self.app, self.plugin.clone()).await.context("backup")?.record;
        let point = record.evidence.consistency_point.clone().ok_or_else(|| anyhow!("backup {} has no consistency point", record.id))?;
        let seq = point_seq(&point).ok_or_else(|| anyhow!("consistency point {point} has no GTID"))?;
        let mut out = empty_outcome(round, record.snapshot_name.clone(), point.0.clone());
        let acked = self.history_now();
        let restore = match self.orchestrator.restore_to_clone(&self.app, &record.id, self.plugin.clone()).await {
            Ok(r) => r,
            Err(e) => {
                out.error = Some(format!("restore_to_clone failed: {e}"));
                return Ok(out);
            }
        };
        out.recovered_point = restore.recovered_point.as_ref().map(|p| p.0.clone());
        out.needed_crash_recovery = restore.needed_crash_recovery;
        let RestoreMode::Clone { clone_names } = &restore.mode else { bail!("restore {} is not a clone restore", restore.id) };
        let clone_name = clone_names.first().cloned().ok_or_else(|| anyhow!("restore {} made no clone", restore.id))?;
        let opened = self.open_clone(&clone_name).await;
        self.orchestrator.delete_clone_restore(&restore.id).await.with_context(|| format!("deleting the clones of restore {}", restore.id))?;
        let (state, _) = match opened {
            Ok(o) => o,
            Err(e) => {
                out.error = Some(format!("{e:#}"));
                return Ok(out);
            }
        };
        let history = self.history_now();
        out.rows = history.check(&state.rows, &state.readable, seq);
        out.rows.unreadable_tables = state.unreadable;
        out.lost_acknowledged_commits = acked.acked.iter().filter(|(k, s)| **s <= seq && !state.rows.contains(*k)).count();
        out.check_table = state.findings;
        out.exact = out.rows.exact() && out.check_table.is_empty() && restore.recovered_point.as_ref() == Some(&point) && record.consistency == Some(Consistency::Application);
        Ok(out)
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
        o.say(&format!("  {:<13} {:<7} {:>8}  {}", "failover", "n/a", "-", "not yet for MariaDB (site B, SnapMirror)"));
        o.say(&format!(
            "verdict: {}  (workload: mariadb, a real mariadbd on a FUSE-mounted simulated volume; total {:.1} s)",
            if self.report.ok { "PASS, every verification passed" } else { "FAIL, see the steps above" },
            self.report.seconds
        ));
    }
}

fn empty_outcome(round: u32, snapshot: String, claimed_point: String) -> RestoreOutcome {
    RestoreOutcome {
        round,
        snapshot,
        claimed_point,
        recovered_point: None,
        needed_crash_recovery: None,
        check_table: Vec::new(),
        rows: RowCheck::default(),
        lost_acknowledged_commits: 0,
        exact: false,
        error: None,
    }
}

/// `gtid=0-1-42;binlog=...` -> `0-1-42`.
fn short_gtid(point: &str) -> String {
    point.strip_prefix("gtid=").unwrap_or(point).split(';').next().unwrap_or_default().to_string()
}

fn state_text(r: &RestoreOutcome) -> String {
    if let Some(e) = &r.error {
        return format!("did not open: {}", e.lines().next().unwrap_or_default());
    }
    let mut parts = Vec::new();
    if r.exact {
        parts.push("exact".to_string());
    }
    if let Some(f) = r.check_table.first() {
        parts.push(format!("CHECK TABLE: {f}{}", if r.check_table.len() > 1 { format!(" (+{} more)", r.check_table.len() - 1) } else { String::new() }));
    }
    if !r.rows.unreadable_tables.is_empty() {
        parts.push(format!("unreadable: {}", r.rows.unreadable_tables.join("; ")));
    }
    if r.rows.missing > 0 || r.rows.after_point > 0 {
        parts.push(format!("rows off its GTID point: {} missing, {} beyond", r.rows.missing, r.rows.after_point));
    }
    if r.rows.never_written > 0 {
        parts.push(format!("{} rows never written", r.rows.never_written));
    }
    if parts.is_empty() {
        parts.push("rows consistent, but not exact".into());
    }
    parts.join("; ")
}

fn summarize(how: &'static str, results: Vec<RestoreOutcome>) -> SideSummary {
    let count = |f: &dyn Fn(&RestoreOutcome) -> bool| results.iter().filter(|r| f(r)).count() as u32;
    SideSummary {
        how,
        restores: results.len() as u32,
        exact: count(&|r| r.exact),
        needed_crash_recovery: count(&|r| r.needed_crash_recovery == Some(true)),
        tables_flagged: count(&|r| !r.check_table.is_empty()),
        lost_acknowledged_commits: count(&|r| r.lost_acknowledged_commits > 0),
        rows_off_their_point: count(&|r| r.error.is_none() && (r.rows.missing > 0 || r.rows.after_point > 0 || !r.rows.unreadable_tables.is_empty())),
        did_not_open: count(&|r| r.error.is_some()),
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_positions_parse() {
        assert_eq!(gtid_seq("0-1-42"), Some(42));
        assert_eq!(gtid_seq("0-1-3,1-1-9"), Some(9));
        assert_eq!(gtid_seq(""), None);
        assert_eq!(short_gtid("gtid=0-1-42;binlog=mysql-bin.000001:77"), "0-1-42");
    }

    #[test]
    fn the_row_check_catches_every_kind_of_difference() {
        let mut h = History::default();
        h.acked.insert(("orders", 0, 1), 1);
        h.acked.insert(("events", 0, 2), 2);
        h.acked.insert(("audit", 0, 3), 3);
        h.unknown.insert(("orders", 0, 4));
        let all = ["orders", "events", "audit"];
        let rows: BTreeSet<RowKey> = [("orders", 0, 1), ("events", 0, 2)].into_iter().collect();
        assert!(h.check(&rows, &all, 2).exact());
        // An unknown outcome may go either way.
        let with_unknown: BTreeSet<RowKey> = rows.iter().copied().chain([("orders", 0, 4)]).collect();
        assert!(h.check(&with_unknown, &all, 2).exact());
        assert_eq!(h.check(&rows, &all, 3).missing, 1, "a commit within the point is missing");
        assert_eq!(h.check(&rows, &all, 1).after_point, 1, "a commit after the point is present");
        let phantom: BTreeSet<RowKey> = rows.iter().copied().chain([("audit", 7, 7)]).collect();
        assert_eq!(h.check(&phantom, &all, 2).never_written, 1);
        // A table that could not be read is judged elsewhere, not counted as missing rows.
        assert_eq!(h.check(&rows, &["orders", "events"], 3).missing, 0);
    }
}
