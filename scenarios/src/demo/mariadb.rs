//! A real MariaDB as the demo's workload: a `mariadbd` whose data directory lives on a
//! FUSE-mounted volume of the simulated ONTAP cluster (what `ontap-sim serve --mount-root`
//! does), the MySQL plugin (`BACKUP STAGE`), and the real orchestrator reaching the
//! simulator over ONTAP REST.
//!
//! The load: concurrent writers insert rows into an InnoDB, a MyISAM and a
//! non-transactional Aria table, one autocommit statement each, and record the GTID the
//! server gave every acknowledged commit. A restore is checked row by row against that
//! record: exactly the acknowledged commits within the backup's GTID point, no more, no less.
//!
//! Every process is owned by a guard ([`MariaDb`]); fields are declared so that writers and
//! servers stop first. The mounts belong to the walk-through's simulator host, which drops
//! after the workload.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use mysql_async::prelude::Queryable;
use ontap_client::SecretString;
use parking_lot::Mutex;
use serde::Serialize;
use stasis_core::domain::{AppKind, AppSpec, BackupRecord, Consistency, ConsistencyPoint, RestoreMode, RestoreRecord};
use stasis_core::dr::Site;
use stasis_core::plugin::AppPlugin;
use stasis_core::plugins::mysql::{crash_recovery_ran, gtid_of, quote_identifier, MysqlConfig, MysqlPlugin, ServerControl};
use stasis_core::storage::VolumeInfo;

use super::{Ctx, DemoOptions, LoadStats, RestoreCheck, RestoreOutcome, SimHost, Verdict, WorkloadImpl, SVM};
use crate::mariadb::{self as mdb, MariaDb, MariaDbOptions, SimWithMounts};

const APP_NAME: &str = "shop";
const VOLUME: &str = "shop_data";
const VOLUME_SIZE: u64 = 2 << 30;
/// The data directory inside the volume.
const DATA_SUBDIR: &str = "data";
const DATABASE: &str = "shop";
/// (table, engine clause, engine name): every engine is written all the time.
const TABLES: [(&str, &str, &str); 3] = [("orders", "ENGINE=InnoDB", "InnoDB"), ("events", "ENGINE=MyISAM", "MyISAM"), ("audit", "ENGINE=Aria TRANSACTIONAL=0", "Aria")];
/// The table the damage step drops.
const DROPPED_TABLE: &str = "orders";
/// The writers run this long before the first backup, so there is something in flight.
const WRITERS_WARM_UP: Duration = Duration::from_millis(300);
/// Pause between two backups (the writers keep committing).
const BACKUP_GAP: Duration = Duration::from_millis(150);
/// Writer ids of each load phase start at phase * this, so rows of two phases never collide.
const WRITER_ID_STRIDE: u32 = 1000;
/// How long a new clone's mount may take to appear.
const MOUNT_WAIT_MAX: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Serialize)]
pub struct ServerSummary {
    pub version: String,
    pub port: u16,
    pub data_dir: String,
    pub volume: &'static str,
    pub tables: Vec<String>,
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
    gtid.split(',').map(str::trim).rfind(|g| !g.is_empty()).and_then(|g| g.rsplit('-').next()).and_then(|s| s.parse().ok())
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

/// `gtid=0-1-42;binlog=...` -> `0-1-42`.
fn short_gtid(point: &str) -> String {
    point.strip_prefix("gtid=").unwrap_or(point).split(';').next().unwrap_or_default().to_string()
}


// ---------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------

/// Field order is drop order: writers, then the servers.
pub(crate) struct MariaDbWorkload {
    writers: Option<Writers>,
    /// The server on site B's mirror (after `standby_on_b`) and its plugin.
    server_b: Option<MariaDb>,
    plugin_b: Option<Arc<MysqlPlugin>>,
    server: MariaDb,
    app_password: String,
    plugin: Arc<MysqlPlugin>,
    /// Where the app runs: the writers commit there.
    active: Site,
    writers_n: u32,
    /// Everything acknowledged on the current timeline (cut back by the in-place restore).
    history: History,
    summary: ServerSummary,
    mount_root: PathBuf,
}

impl MariaDbWorkload {
    pub(crate) async fn setup(host: &SimHost, opts: &DemoOptions) -> anyhow::Result<(MariaDbWorkload, AppSpec)> {
        let sim = host.mounted().ok_or_else(|| anyhow!("the MariaDB workload needs a simulator with FUSE mounts"))?;
        let app_password = format!("app-{:016x}", rand::random::<u64>());
        host.create_volume(SVM, VOLUME, &format!("/{VOLUME}"), VOLUME_SIZE).context("creating the app's volume")?;
        let data_dir = sim.mounts().mount_point(&format!("/{VOLUME}")).join(DATA_SUBDIR);
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
        let plugin = Arc::new(plugin_for(&server, sim, &app_password, opts.freeze_timeout)?);
        let app = AppSpec { name: APP_NAME.into(), kind: AppKind::Mysql, svm: SVM.into(), volumes: vec![VOLUME.into()], freeze_timeout: opts.freeze_timeout };
        let summary = ServerSummary {
            version,
            port: server.port(),
            data_dir: data_dir.display().to_string(),
            volume: VOLUME,
            tables: TABLES.iter().map(|(t, _, e)| format!("{DATABASE}.{t} ({e})")).collect(),
        };
        let wl = MariaDbWorkload { writers: None, server_b: None, plugin_b: None, server, app_password, plugin, active: Site::A, writers_n: opts.writers, history: History::default(), summary, mount_root: sim.mount_root() };
        Ok((wl, app))
    }

    fn server_at(&self, site: Site) -> Option<&MariaDb> {
        match site {
            Site::A => Some(&self.server),
            Site::B => self.server_b.as_ref(),
        }
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
    async fn open_clone(&self, sim: &SimWithMounts, clone_name: &str) -> anyhow::Result<(ServerState, bool)> {
        let data_dir = wait_for_dir(sim, &format!("/{clone_name}")).await?;
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
}

/// The MySQL plugin for `server`, which runs on `sim`'s mounts: stop, start and private
/// recovery instances through argument vectors.
fn plugin_for(server: &MariaDb, sim: &SimWithMounts, password: &str, freeze_timeout: Duration) -> anyhow::Result<MysqlPlugin> {
    let config = MysqlConfig {
        host: "127.0.0.1".into(),
        port: server.port(),
        user: mdb::APP_USER.into(),
        password: SecretString::from(password.to_string()),
        freeze_timeout,
        lock_wait_timeout: Duration::from_secs(2).min(freeze_timeout / 2),
        server_control: Some(ServerControl {
            stop_command: server.stop_command()?,
            start_command: server.start_command()?,
            mount_root: sim.mount_root(),
            data_subdir: DATA_SUBDIR.into(),
            instance_command: mdb::instance_command(&MariaDbOptions::default())?,
            start_wait: mdb::START_WAIT_MAX,
        }),
    };
    MysqlPlugin::new(config).map_err(|e| anyhow!("{e}"))
}

#[async_trait::async_trait]
impl WorkloadImpl for MariaDbWorkload {
    fn name(&self) -> &'static str {
        "mariadb"
    }

    fn note(&self) -> String {
        format!("a real MariaDB ({}) whose data directory is on the FUSE-mounted simulated volume {VOLUME}; writers insert into InnoDB, MyISAM and Aria tables", self.summary.version)
    }

    fn server(&self) -> Option<ServerSummary> {
        Some(self.summary.clone())
    }

    fn intro(&self, _ctx: &Ctx<'_>) -> Vec<String> {
        vec![
            format!("  workload  MariaDB {} (a real mariadbd, port {}), data directory on the simulated volume", self.summary.version, self.server.port()),
            format!("            {VOLUME}, FUSE-mounted at {}", self.mount_root.join(VOLUME).display()),
            format!("            {} writers insert into {DATABASE}.orders (InnoDB), {DATABASE}.events (MyISAM), {DATABASE}.audit (Aria),", self.writers_n),
            "            recording the GTID of every acknowledged commit.".into(),
        ]
    }

    fn plugin(&self) -> Arc<dyn AppPlugin> {
        self.plugin.clone()
    }

    fn volume_role(&self, volume: &str) -> Option<&'static str> {
        (volume == VOLUME).then_some("data")
    }

    fn app_line(&self, _app: &AppSpec) -> String {
        format!("kind mysql (BACKUP STAGE lock), SVM {SVM}, volume {VOLUME}")
    }

    fn headline(&self, step: &str, opts: &DemoOptions) -> String {
        match step {
            "discover" => format!("discover: the volumes of SVM {SVM}, read through the ONTAP REST client"),
            "protect" => format!("protect: record app {APP_NAME} (kind mysql) and an SLA policy in the catalog"),
            "backup" => format!("backup under write load: {} application-consistent backups while {} writers commit", opts.backups, opts.writers),
            "damage" => format!("damage: DROP TABLE {DATABASE}.{DROPPED_TABLE}"),
            "restore" => "restore in place to the last backup (stop, SnapRestore, start), then verify every row".into(),
            "crash_vs_app" => format!("crash-consistent vs application-consistent, {} rounds under write load", opts.crash_rounds),
            other => other.to_string(),
        }
    }

    async fn check_discovered(&mut self, ctx: &Ctx<'_>, _app_volumes: &[VolumeInfo]) -> anyhow::Result<bool> {
        // The server's own idea of its data directory must be on that volume's mount.
        let mut conn = self.server.app_conn(&self.app_password, None).await?;
        let datadir: String = conn.query_first("SELECT @@datadir").await?.unwrap_or_default();
        conn.disconnect().await?;
        let on_volume = PathBuf::from(datadir.trim_end_matches('/')).starts_with(self.mount_root.join(VOLUME));
        ctx.say(format!("mariadbd reports datadir {datadir}: {}", if on_volume { format!("on volume {VOLUME}") } else { "NOT on the app's volume".into() }));
        Ok(on_volume)
    }

    async fn start_load(&mut self, _ctx: &Ctx<'_>, phase: u32) -> anyhow::Result<()> {
        self.stop_load().await;
        let server = self.server_at(self.active).ok_or_else(|| anyhow!("no server at site {:?}", self.active))?;
        self.writers = Some(Writers::start(server, &self.app_password, self.writers_n, phase * WRITER_ID_STRIDE).await?);
        Ok(())
    }

    async fn stop_load(&mut self) {
        if let Some(w) = self.writers.take() {
            let (history, _) = w.stop().await;
            self.history.merge(&history);
        }
    }

    fn warm_up(&self) -> Duration {
        WRITERS_WARM_UP
    }

    fn backup_gap(&self) -> Duration {
        BACKUP_GAP
    }

    fn load_stats(&self, point: Option<&ConsistencyPoint>) -> LoadStats {
        let history = self.history_now();
        let limit = point.and_then(point_seq);
        let after_point = limit.map_or(0, |l| history.acked.values().filter(|s| **s > l).count() as u64);
        let failures = self.writers.as_ref().map_or(0, |w| w.failures.load(Ordering::Relaxed));
        LoadStats { acknowledged: history.acked.len() as u64, after_point, met_a_freeze: 0, failures }
    }

    fn point_known(&self, point: &ConsistencyPoint) -> bool {
        point_seq(point).is_some()
    }

    fn freeze_mark(&self) -> usize {
        0
    }

    fn freeze_windows(&self, _mark: usize, records: &[BackupRecord], bound: Duration) -> (Vec<f64>, bool) {
        let windows: Vec<f64> = records
            .iter()
            .filter_map(|r| match (r.evidence.lock_requested, r.evidence.lock_released) {
                (Some(requested), Some(released)) => Some((released - requested).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0),
                _ => None,
            })
            .collect();
        let within = windows.len() == records.len() && windows.iter().all(|w| *w <= super::ms(bound));
        (windows, within)
    }

    fn freeze_measured_by(&self) -> &'static str {
        "lock requested -> released, as the workflow recorded it"
    }

    async fn damage(&mut self, ctx: &Ctx<'_>, last: &BackupRecord) -> anyhow::Result<(Verdict, serde_json::Value)> {
        let writers = self.writers.take().ok_or_else(|| anyhow!("the writers are not running"))?;
        let (history, failures) = writers.stop().await;
        self.history.merge(&history);
        let last_seq = last.evidence.consistency_point.as_ref().and_then(point_seq).ok_or_else(|| anyhow!("the last backup has no GTID point"))?;
        let after = self.history.acked.values().filter(|s| **s > last_seq).count();
        ctx.say(format!("writers stopped: {} commits acknowledged in all ({failures} statements failed)", self.history.acked.len()));
        let mut conn = self.server.app_conn(&self.app_password, Some(DATABASE)).await?;
        let table = quote_identifier(DROPPED_TABLE);
        let rows: Option<u64> = conn.query_first(format!("SELECT COUNT(*) FROM {table}")).await?;
        conn.query_drop(format!("DROP TABLE {table}")).await.context("dropping the table")?;
        let gone = matches!(conn.query_drop(format!("SELECT 1 FROM {table} LIMIT 1")).await, Err(mysql_async::Error::Server(e)) if e.code == 1146);
        conn.disconnect().await?;
        let rows = rows.unwrap_or(0) as usize;
        ctx.say(format!("DROP TABLE {DATABASE}.{DROPPED_TABLE}: {rows} rows gone; a SELECT now fails with error 1146 (table doesn't exist): {gone}"));
        ctx.say(format!("{after} commits were acknowledged after the last backup; an in-place restore discards them"));
        let detail = serde_json::json!({ "dropped_table": format!("{DATABASE}.{DROPPED_TABLE}"), "rows_in_it": rows, "commits_after_last_backup": after });
        Ok((Verdict { ok: gone && rows > 0, summary: format!("{DATABASE}.{DROPPED_TABLE} dropped ({rows} rows)") }, detail))
    }

    fn restore_mark(&self) -> usize {
        0
    }

    async fn check_restore(&mut self, ctx: &Ctx<'_>, last: &BackupRecord, _record: &RestoreRecord, _mark: usize) -> anyhow::Result<RestoreCheck> {
        let point = last.evidence.consistency_point.clone().ok_or_else(|| anyhow!("the last backup has no consistency point"))?;
        let seq = point_seq(&point).ok_or_else(|| anyhow!("consistency point {point} has no GTID"))?;
        let answers = self.plugin.answers().await;
        let mut conn = self.server.app_conn(&self.app_password, None).await.context("connecting to the restored server")?;
        let state = read_server(&mut conn).await?;
        conn.disconnect().await?;
        let mut rows = self.history.check(&state.rows, &state.readable, seq);
        rows.unreadable_tables = state.unreadable.clone();
        let dropped_back = state.readable.contains(&DROPPED_TABLE) && state.rows.iter().any(|r| r.0 == DROPPED_TABLE);
        ctx.say(format!(
            "rows: {} found, {} expected (every commit acknowledged within GTID {seq}); missing {}, after the point {}, never written {}",
            rows.found, rows.expected, rows.missing, rows.after_point, rows.never_written
        ));
        ctx.say(format!("{DATABASE}.{DROPPED_TABLE} is back: {dropped_back}; CHECK TABLE: {}", if state.findings.is_empty() { "all OK".to_string() } else { state.findings.join(" | ") }));
        let discarded = self.history.acked.values().filter(|s| **s > seq).count() as u64;
        // The timeline is cut back to the point: later GTID sequence numbers will be reused.
        self.history.acked.retain(|_, s| *s <= seq);
        let exact = rows.exact() && state.findings.is_empty();
        let ok = exact && dropped_back && answers;
        let summary = if ok {
            format!("exact at GTID {seq}: {} rows, the dropped table back, server up", rows.found)
        } else {
            format!("NOT exact at GTID {seq} (rows exact: {}, table back: {dropped_back}, server answers: {answers})", rows.exact())
        };
        Ok(RestoreCheck { ok, exact, summary, commits_discarded: discarded, detail: serde_json::json!({ "rows": rows, "dropped_table_back": dropped_back, "server_answers": answers }) })
    }

    fn crash_vs_app_intro(&self) -> Vec<&'static str> {
        vec![
            "crash: an array snapshot over ONTAP REST with NO quiesce while the writers run (like a storage",
            "       snapshot policy), FlexCloned, a second mariadbd started on the clone",
            "app:   Stasis's backup workflow (BACKUP STAGE lock, snapshot, unlock), restored to a FlexClone by",
            "       restore_to_clone (the plugin's checks), then the same second mariadbd on the clone",
        ]
    }

    fn sides(&self) -> [&'static str; 2] {
        ["array snapshot without quiesce, FlexClone, mariadbd on the clone", "Stasis backup (BACKUP STAGE lock), restore_to_clone, mariadbd on the clone"]
    }

    fn short_point(&self, point: &str) -> String {
        short_gtid(point)
    }

    /// Snapshot the volume over REST with no quiesce, clone it, open it with a second server.
    async fn crash_round(&mut self, ctx: &Ctx<'_>, round: u32) -> anyhow::Result<RestoreOutcome> {
        let sim = ctx.site_a.mounted().ok_or_else(|| anyhow!("no FUSE mounts"))?;
        let volume = ctx.app_volumes.first().cloned().ok_or_else(|| anyhow!("the app's volume was not discovered"))?;
        let name = format!("demo_crash_{round:02}");
        let acked = self.history_now();
        let claimed = acked.max_seq();
        let snapshot = ctx.storage.create_snapshot(&volume.uuid, &name, Duration::from_secs(10)).await.context("taking the crash-consistent snapshot")?;
        let clone_name = format!("{VOLUME}_crash{round:02}");
        let clone = ctx.storage.clone_volume(&volume.uuid, &name, &clone_name, Some(&format!("/{clone_name}"))).await.with_context(|| format!("cloning {VOLUME} from {name}"))?;
        let opened = self.open_clone(sim, &clone_name).await;
        ctx.storage.delete_volume(&clone.uuid).await.with_context(|| format!("deleting clone {clone_name}"))?;
        ctx.storage.delete_snapshot(&volume.uuid, &snapshot.uuid).await.with_context(|| format!("deleting snapshot {name}"))?;
        let mut out = RestoreOutcome::new(round, name, format!("gtid=0-1-{claimed}"));
        let (state, crash_recovery) = match opened {
            Ok(o) => o,
            Err(e) => {
                out.error = Some(format!("{e:#}"));
                out.state = state_text(&out, None);
                return Ok(out);
            }
        };
        // Judge against everything acknowledged by now: rows acknowledged after the request
        // may be in the snapshot, and must then be within the clone's own point.
        let history = self.history_now();
        let own_seq = gtid_seq(&state.gtid).unwrap_or(0);
        out.recovered_point = Some(format!("gtid={}", state.gtid));
        out.needed_crash_recovery = Some(crash_recovery);
        let mut rows = history.check(&state.rows, &state.readable, own_seq);
        rows.unreadable_tables = state.unreadable;
        out.lost_acknowledged_commits = acked.acked.keys().filter(|k| state.readable.contains(&k.0) && !state.rows.contains(*k)).count() as u64;
        out.consistent_with_its_point = rows.missing == 0 && rows.after_point == 0 && rows.unreadable_tables.is_empty();
        out.findings = state.findings;
        out.exact = rows.exact() && out.findings.is_empty() && out.lost_acknowledged_commits == 0 && own_seq >= claimed;
        out.state = state_text(&out, Some(&rows));
        out.detail = serde_json::json!({ "rows": rows });
        Ok(out)
    }

    /// One backup through the workflow, restored to a clone by the workflow, opened by a
    /// second server the same way as the crash side, and the clone deleted.
    async fn app_round(&mut self, ctx: &Ctx<'_>, round: u32) -> anyhow::Result<RestoreOutcome> {
        let sim = ctx.site_a.mounted().ok_or_else(|| anyhow!("no FUSE mounts"))?;
        let record = ctx.orchestrator.backup(&ctx.app, self.plugin()).await.context("backup")?.record;
        let point = record.evidence.consistency_point.clone().ok_or_else(|| anyhow!("backup {} has no consistency point", record.id))?;
        let seq = point_seq(&point).ok_or_else(|| anyhow!("consistency point {point} has no GTID"))?;
        let mut out = RestoreOutcome::new(round, record.snapshot_name.clone(), point.0.clone());
        let acked = self.history_now();
        let restore = match ctx.orchestrator.restore_to_clone(&ctx.app, &record.id, self.plugin()).await {
            Ok(r) => r,
            Err(e) => {
                out.error = Some(format!("restore_to_clone failed: {e}"));
                out.state = state_text(&out, None);
                return Ok(out);
            }
        };
        out.recovered_point = restore.recovered_point.as_ref().map(|p| p.0.clone());
        out.needed_crash_recovery = restore.needed_crash_recovery;
        let RestoreMode::Clone { clone_names } = &restore.mode else { bail!("restore {} is not a clone restore", restore.id) };
        let clone_name = clone_names.first().cloned().ok_or_else(|| anyhow!("restore {} made no clone", restore.id))?;
        let opened = self.open_clone(sim, &clone_name).await;
        ctx.orchestrator.delete_clone_restore(&restore.id).await.with_context(|| format!("deleting the clones of restore {}", restore.id))?;
        let (state, _) = match opened {
            Ok(o) => o,
            Err(e) => {
                out.error = Some(format!("{e:#}"));
                out.state = state_text(&out, None);
                return Ok(out);
            }
        };
        let history = self.history_now();
        let mut rows = history.check(&state.rows, &state.readable, seq);
        rows.unreadable_tables = state.unreadable;
        out.lost_acknowledged_commits = acked.acked.iter().filter(|(k, s)| **s <= seq && !state.rows.contains(*k)).count() as u64;
        out.consistent_with_its_point = rows.missing == 0 && rows.after_point == 0 && rows.unreadable_tables.is_empty();
        out.findings = state.findings;
        out.exact = rows.exact() && out.findings.is_empty() && restore.recovered_point.as_ref() == Some(&point) && record.consistency == Some(Consistency::Application);
        out.state = state_text(&out, Some(&rows));
        out.detail = serde_json::json!({ "rows": rows });
        Ok(out)
    }

    async fn mirror_writable(&self, ctx: &Ctx<'_>, b_volumes: &[VolumeInfo]) -> anyhow::Result<bool> {
        let sim_b = ctx.site_b.mounted().ok_or_else(|| anyhow!("site B has no FUSE mounts"))?;
        let mut taken = false;
        for v in b_volumes {
            let junction = v.junction_path.as_deref().ok_or_else(|| anyhow!("site B's mirror {} is not mounted (no junction path)", v.name))?;
            let data_dir = wait_for_dir(sim_b, junction).await?;
            let probe = data_dir.join("stray-write-probe");
            match std::fs::write(&probe, b"x") {
                Ok(()) => {
                    taken = true;
                    let _ = std::fs::remove_file(&probe);
                }
                Err(e) if e.raw_os_error() == Some(libc_erofs()) => {}
                Err(e) => bail!("writing to {} failed, but not as read-only: {e}", probe.display()),
            }
        }
        Ok(taken)
    }

    async fn site_a_lost(&mut self, ctx: &Ctx<'_>, point: &ConsistencyPoint) -> anyhow::Result<u64> {
        let seq = point_seq(point).ok_or_else(|| anyhow!("consistency point {point} has no GTID"))?;
        // Kill first: the writers are cut off mid-statement, as they would be.
        self.server.kill();
        self.stop_load().await;
        let acked = self.history.acked.values().filter(|s| **s > seq).count() as u64;
        ctx.say(format!("mariadbd at site A killed (SIGKILL) with {} writers connected", self.writers_n));
        Ok(acked)
    }

    async fn standby_on_b(&mut self, ctx: &Ctx<'_>, b_volumes: &[VolumeInfo]) -> anyhow::Result<Arc<dyn AppPlugin>> {
        let sim_b = ctx.site_b.mounted().ok_or_else(|| anyhow!("site B has no FUSE mounts"))?;
        let v = b_volumes.first().ok_or_else(|| anyhow!("site B has no mirror volume"))?;
        let junction = v.junction_path.as_deref().ok_or_else(|| anyhow!("site B's mirror {} is not mounted (no junction path)", v.name))?;
        let data_dir = wait_for_dir(sim_b, junction).await?;
        // Planned, not started: the failover recovers the data and then starts it.
        let server_b = MariaDb::planned(&data_dir, MariaDbOptions::default()).context("planning a mariadbd on site B's mirror")?;
        let plugin_b = Arc::new(plugin_for(&server_b, sim_b, &self.app_password, ctx.app.freeze_timeout)?);
        ctx.say(format!("standby at site B: mariadbd on {} (port {}), started by the failover", data_dir.display(), server_b.port()));
        self.server_b = Some(server_b);
        self.plugin_b = Some(plugin_b.clone());
        Ok(plugin_b)
    }

    fn plugin_at(&self, site: Site) -> Option<Arc<dyn AppPlugin>> {
        match site {
            Site::A => Some(self.plugin.clone()),
            Site::B => self.plugin_b.clone().map(|p| p as Arc<dyn AppPlugin>),
        }
    }

    async fn tamper_on_b(&mut self) -> anyhow::Result<()> {
        let server = self.server_b.as_ref().ok_or_else(|| anyhow!("no server at site B"))?;
        let mut conn = server.app_conn(&self.app_password, Some(DATABASE)).await?;
        // Not recorded in the history: a row nobody acknowledged to the writers.
        conn.exec_drop(format!("INSERT INTO {} (writer, n, payload) VALUES (?, ?, ?)", quote_identifier(TABLES[0].0)), (999_999u32, 1u32, "stray")).await.context("the stray commit at site B")?;
        conn.disconnect().await?;
        Ok(())
    }

    async fn verify_site(&mut self, ctx: &Ctx<'_>, site: Site, point: &ConsistencyPoint) -> anyhow::Result<RestoreCheck> {
        let seq = point_seq(point).ok_or_else(|| anyhow!("consistency point {point} has no GTID"))?;
        let server = self.server_at(site).ok_or_else(|| anyhow!("no server at site {site:?}"))?;
        let answers = match site {
            Site::A => self.plugin.answers().await,
            Site::B => match &self.plugin_b {
                Some(p) => p.answers().await,
                None => false,
            },
        };
        let mut conn = server.app_conn(&self.app_password, None).await.with_context(|| format!("connecting to the server at site {site:?}"))?;
        let state = read_server(&mut conn).await?;
        conn.disconnect().await?;
        let check = check_site_state(&self.history, &state, gtid_of(point), seq);
        ctx.say(format!(
            "site {site:?}: mariadbd at GTID {} (expected {}); rows: {} found, {} expected; missing {}, after the point {}, never written {}",
            state.gtid, gtid_of(point), check.rows.found, check.rows.expected, check.rows.missing, check.rows.after_point, check.rows.never_written
        ));
        ctx.say(format!("CHECK TABLE: {}; server answers: {answers}", if state.findings.is_empty() { "all OK".to_string() } else { state.findings.join(" | ") }));
        let after = self.history.acked.values().filter(|s| **s > seq).count() as u64;
        // The timeline is this site's from here: later GTID sequence numbers will be reused.
        self.history.acked.retain(|_, s| *s <= seq);
        self.active = site;
        let ok = check.exact && answers;
        let summary = if ok {
            format!("site {site:?} holds exactly GTID {seq}: {} rows in 3 engines, CHECK TABLE clean, server up", check.rows.found)
        } else {
            format!("site {site:?} is NOT exactly GTID {seq} (rows exact: {}, GTID matches: {}, server answers: {answers})", check.rows.exact(), check.gtid_matches)
        };
        Ok(RestoreCheck { ok, exact: check.exact, summary, commits_discarded: after, detail: serde_json::json!({ "rows": check.rows, "gtid": state.gtid, "gtid_matches": check.gtid_matches, "findings": state.findings, "server_answers": answers }) })
    }

    fn kept_info(&self) -> Vec<String> {
        vec![
            format!("  MariaDB     127.0.0.1:{}   user {}, password {}   database {DATABASE}", self.server.port(), mdb::APP_USER, self.app_password),
            format!("  mounts      {}   (each volume at its junction path, .snapshot/ inside)", self.mount_root.display()),
            format!("    mariadb -h 127.0.0.1 -P {} -u {} -p'{}' {DATABASE} -e 'SELECT COUNT(*) FROM orders'", self.server.port(), mdb::APP_USER, self.app_password),
        ]
    }

    async fn shutdown(&mut self) {
        self.stop_load().await;
        // A clean shutdown; the guards kill whatever is left (also a server the plugin restarted).
        for (server, plugin) in [(Some(&self.server), Some(&self.plugin)), (self.server_b.as_ref(), self.plugin_b.as_ref())] {
            if let Some(server) = server {
                if let Ok(mut conn) = server.root_conn().await {
                    let _ = conn.query_drop("SHUTDOWN").await;
                }
            }
            if let Some(plugin) = plugin {
                let _ = plugin.stop().await;
            }
        }
    }
}

/// EROFS: what a write to a snapmirrored (dp) volume's mount gets.
const fn libc_erofs() -> i32 {
    30
}

/// The data directory under `junction` on `sim`'s mounts, once the mount shows it.
async fn wait_for_dir(sim: &SimWithMounts, junction: &str) -> anyhow::Result<PathBuf> {
    let data_dir = sim.mounts().mount_point(junction).join(DATA_SUBDIR);
    let started = Instant::now();
    while !data_dir.is_dir() {
        if let Some(e) = sim.mounts().reconcile().into_iter().next() {
            return Err(e.context(format!("mounting {junction}")));
        }
        if started.elapsed() > MOUNT_WAIT_MAX {
            bail!("the data directory {} did not appear within {MOUNT_WAIT_MAX:?}", data_dir.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(data_dir)
}

/// What a site's server holds against the writers' history at GTID `gtid` (sequence `seq`).
struct SiteCheck {
    rows: RowCheck,
    gtid_matches: bool,
    exact: bool,
}

/// The verifier of a failover or failback: exactly the rows acknowledged within `seq`,
/// every table readable and clean, and the server at exactly that GTID position.
fn check_site_state(history: &History, state: &ServerState, gtid: &str, seq: u64) -> SiteCheck {
    let mut rows = history.check(&state.rows, &state.readable, seq);
    rows.unreadable_tables = state.unreadable.clone();
    let gtid_matches = state.gtid == gtid;
    let exact = rows.exact() && state.findings.is_empty() && gtid_matches && rows.expected > 0;
    SiteCheck { rows, gtid_matches, exact }
}

fn state_text(r: &RestoreOutcome, rows: Option<&RowCheck>) -> String {
    if let Some(e) = &r.error {
        return format!("did not open: {}", e.lines().next().unwrap_or_default());
    }
    let mut parts = Vec::new();
    if r.exact {
        parts.push("exact".to_string());
    }
    if let Some(f) = r.findings.first() {
        parts.push(format!("CHECK TABLE: {f}{}", if r.findings.len() > 1 { format!(" (+{} more)", r.findings.len() - 1) } else { String::new() }));
    }
    if let Some(rows) = rows {
        if !rows.unreadable_tables.is_empty() {
            parts.push(format!("unreadable: {}", rows.unreadable_tables.join("; ")));
        }
        if rows.missing > 0 || rows.after_point > 0 {
            parts.push(format!("rows off its GTID point: {} missing, {} beyond", rows.missing, rows.after_point));
        }
        if rows.never_written > 0 {
            parts.push(format!("{} rows never written", rows.never_written));
        }
    }
    if parts.is_empty() {
        parts.push("rows consistent, but not exact".into());
    }
    parts.join("; ")
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
    fn the_site_verifier_fails_on_any_difference() {
        let mut h = History::default();
        h.acked.insert(("orders", 0, 1), 1);
        h.acked.insert(("events", 0, 2), 2);
        h.acked.insert(("audit", 0, 3), 3);
        let state = |rows: &[RowKey], gtid: &str, findings: Vec<String>| ServerState {
            gtid: gtid.into(),
            rows: rows.iter().copied().collect(),
            readable: TABLES.iter().map(|t| t.0).collect(),
            unreadable: Vec::new(),
            findings,
        };
        let exact = [("orders", 0, 1), ("events", 0, 2)];
        assert!(check_site_state(&h, &state(&exact, "0-1-2", vec![]), "0-1-2", 2).exact);
        // A row nobody acknowledged (the negative control's stray commit).
        let stray = [("orders", 0, 1), ("events", 0, 2), ("orders", 999_999, 1)];
        assert!(!check_site_state(&h, &state(&stray, "0-1-3", vec![]), "0-1-2", 2).exact);
        // The same rows at another position, a missing row, a commit beyond the point, a finding.
        assert!(!check_site_state(&h, &state(&exact, "0-1-3", vec![]), "0-1-2", 2).exact);
        assert!(!check_site_state(&h, &state(&exact[..1], "0-1-2", vec![]), "0-1-2", 2).exact);
        let beyond = [("orders", 0, 1), ("events", 0, 2), ("audit", 0, 3)];
        assert!(!check_site_state(&h, &state(&beyond, "0-1-2", vec![]), "0-1-2", 2).exact);
        assert!(!check_site_state(&h, &state(&exact, "0-1-2", vec!["events: warning crashed".into()]), "0-1-2", 2).exact);
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
