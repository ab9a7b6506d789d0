//! Scenario cases on real database servers (kinds `mysql` and `postgres`): each case starts
//! its own server with its data on FUSE-mounted simulated volumes (`MariaDbRig`, `PgRig`:
//! the production plugin and the ONTAP REST client), runs the scenario's schedule and checks
//! every restore row by row against the transactions the writers saw acknowledged.
//!
//! - `work`: two writers commit `commits x WORK_SCALE` transactions, then stop.
//! - `backup`: two paced writers commit `BACKUP_LOAD` transactions each while the backup
//!   runs (load inside the freeze); the backup must be application-consistent, the freeze
//!   within its bound (the lock evidence), and the server thawed afterwards.
//! - `restore`: to a clone (a second server opens the clones) or in place (the server is
//!   stopped, reverted, recovered, started); the recovered point must equal the backup's and
//!   the rows must be exactly the acknowledged commits up to it (MariaDB: GTID sequence
//!   numbers; PostgreSQL: commit order from the source's WAL, see `postgres::check_restore`).
//!   After an in-place restore the writers' history is cut back to what was restored.
//! - `retention`: the orchestrator's retention with `keep_last`.
//!
//! At the end: every `stasis_` snapshot belongs to a live backup and every live backup's
//! snapshot exists, no clone is left, no backup unfinished. The achieved RPO after each step
//! is the number of acknowledged transactions the newest live backup does not hold.
//! Faults are not injected on real servers in this build (`unsupported` says so).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::BoxFuture;
use mysql_async::prelude::Queryable;
use stasis_core::domain::{BackupRecord, BackupState, Consistency, Policy, RestoreMode, Schedule};
use stasis_core::plugin::AppPlugin;
use stasis_core::workflow::Orchestrator;

use crate::mariadb::{MariaDb, MariaDbOptions, MariaDbRig, RigOptions, SimWithMounts, DATA_SUBDIR};
use crate::postgres::{self, PgRig, PgRigOptions};
use crate::torture::spec::{CaseSpec, Op};
use crate::torture::{CaseConfig, CaseResult, CaseRunner};
use crate::writers::{Ack, Sink, Writers};

/// Writers per step.
const WRITERS: i32 = 2;
/// Transactions per unit of a `work` step's `commits`.
const WORK_SCALE: u64 = 5;
/// Transactions each writer commits while a backup runs, `BACKUP_LOAD_PACE` apart.
const BACKUP_LOAD: u64 = 20;
const BACKUP_LOAD_PACE: Duration = Duration::from_millis(1);
/// How long a server may take to drop its backup lock session after the thaw.
const THAW_WAIT_MAX: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// MariaDB (`mariadbd`), kind `mysql`.
    Mysql,
    Postgres,
}

/// Runs scenario cases on a real server of `engine`.
pub struct RealRunner {
    pub engine: Engine,
}

impl CaseRunner for RealRunner {
    fn run<'a>(&'a self, spec: &'a CaseSpec, cfg: CaseConfig) -> BoxFuture<'a, CaseResult> {
        Box::pin(run_case(self.engine, spec, cfg))
    }
}

enum Rig {
    Mysql(MariaDbRig),
    Postgres(PgRig),
}

/// A row of the workload: `(writer, seq)`.
type Row = (i32, i64);

struct MysqlSink(mysql_async::Conn);

const MYSQL_DATABASE: &str = "app";

#[async_trait::async_trait]
impl Sink for MysqlSink {
    async fn commit(&mut self, writer: i32, seq: i64) -> anyhow::Result<u64> {
        self.0.exec_drop("INSERT INTO acked (writer, seq) VALUES (?, ?)", (writer, seq)).await?;
        let gtid: Option<String> = self.0.query_first("SELECT @@last_gtid").await?;
        gtid.as_deref().and_then(gtid_seq).context("no GTID for an acknowledged commit (is the binary log on?)")
    }
}

/// The sequence number of a single-domain GTID `0-1-42` (the last of a list).
fn gtid_seq(gtid: &str) -> Option<u64> {
    gtid.split(',').filter_map(|g| g.trim().rsplit('-').next()?.parse().ok()).next_back()
}

impl Rig {
    async fn start(engine: Engine, spec: &CaseSpec, cfg: &CaseConfig) -> anyhow::Result<Rig> {
        Ok(match engine {
            Engine::Mysql => {
                let rig = MariaDbRig::start(RigOptions { seed: spec.seed, freeze_timeout: cfg.freeze_timeout, ..RigOptions::default() }).await?;
                let mut conn = rig.conn(None).await?;
                conn.query_drop(format!("CREATE DATABASE {MYSQL_DATABASE}")).await?;
                conn.query_drop(format!("CREATE TABLE {MYSQL_DATABASE}.acked (writer INT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (writer, seq)) ENGINE=InnoDB")).await?;
                conn.disconnect().await?;
                Rig::Mysql(rig)
            }
            Engine::Postgres => Rig::Postgres(PgRig::start(PgRigOptions { seed: spec.seed, wal_volume: spec.two_volumes, freeze_timeout: cfg.freeze_timeout, ..PgRigOptions::default() }).await?),
        })
    }

    fn orchestrator(&self) -> &Orchestrator {
        match self {
            Rig::Mysql(r) => &r.orchestrator,
            Rig::Postgres(r) => &r.orchestrator,
        }
    }
    fn app(&self) -> &stasis_core::domain::AppSpec {
        match self {
            Rig::Mysql(r) => &r.app,
            Rig::Postgres(r) => &r.app,
        }
    }
    fn plugin(&self) -> Arc<dyn AppPlugin> {
        match self {
            Rig::Mysql(r) => r.plugin_dyn(),
            Rig::Postgres(r) => r.plugin_dyn(),
        }
    }
    fn sim(&self) -> &SimWithMounts {
        match self {
            Rig::Mysql(r) => &r.sim,
            Rig::Postgres(r) => &r.sim,
        }
    }

    async fn sinks(&self) -> anyhow::Result<Vec<Box<dyn Sink>>> {
        match self {
            Rig::Mysql(r) => {
                let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
                for _ in 0..WRITERS {
                    sinks.push(Box::new(MysqlSink(r.conn(Some(MYSQL_DATABASE)).await?)));
                }
                Ok(sinks)
            }
            Rig::Postgres(r) => postgres::sinks(r.server.port(), WRITERS).await,
        }
    }

    async fn rows_mysql(server: &MariaDb, password: &str) -> anyhow::Result<BTreeSet<Row>> {
        let mut conn = server.app_conn(password, Some(MYSQL_DATABASE)).await?;
        let rows: Vec<Row> = conn.query("SELECT writer, seq FROM acked").await.context("reading the rows")?;
        conn.disconnect().await?;
        Ok(rows.into_iter().collect())
    }

    /// The rows of the production server.
    async fn rows(&self) -> anyhow::Result<BTreeSet<Row>> {
        match self {
            Rig::Mysql(r) => Self::rows_mysql(&r.server, &r.app_password).await,
            Rig::Postgres(r) => postgres::rows(&r.server.client().await?).await,
        }
    }

    /// The rows of a second server opened on a clone restore's volumes.
    async fn rows_of_clone(&self, clone_names: &[String]) -> anyhow::Result<BTreeSet<Row>> {
        let first = clone_names.first().context("a clone restore without clones")?;
        match self {
            Rig::Mysql(r) => {
                let dir = r.sim.mounts().mount_point(&format!("/{first}")).join(DATA_SUBDIR);
                let second = MariaDb::start(&dir, MariaDbOptions::default()).await?;
                let rows = Self::rows_mysql(&second, &r.app_password).await;
                second.shutdown().await?;
                rows
            }
            Rig::Postgres(r) => {
                let second = postgres::Postgres::start(&r.clone_data_dir(first)).await?;
                let rows = postgres::rows(&second.client().await?).await;
                drop(second);
                rows
            }
        }
    }

    /// An error if the server is still frozen (or still holds the backup session) after the
    /// thaw: MariaDB must let a commit through (lock wait 1 s); PostgreSQL must have closed
    /// the plugin's session (`pg_backup_start` belongs to it).
    async fn check_thawed(&self) -> anyhow::Result<()> {
        match self {
            Rig::Mysql(r) => {
                let mut conn = r.server.root_conn().await?;
                conn.query_drop("SET SESSION lock_wait_timeout = 1, SESSION innodb_lock_wait_timeout = 1").await?;
                conn.query_drop("CREATE TABLE IF NOT EXISTS mysql.stasis_probe (id INT PRIMARY KEY AUTO_INCREMENT) ENGINE=InnoDB").await?;
                let probe = conn.query_drop("INSERT INTO mysql.stasis_probe VALUES ()").await;
                let _ = conn.disconnect().await;
                match probe {
                    Ok(()) => Ok(()),
                    Err(mysql_async::Error::Server(e)) if e.code == 1205 => anyhow::bail!("the server still blocks commits after the backup"),
                    Err(e) => Err(e.into()),
                }
            }
            Rig::Postgres(r) => {
                let client = r.server.client().await?;
                let deadline = Instant::now() + THAW_WAIT_MAX;
                loop {
                    let sessions: i64 = client.query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stasis'", &[]).await?.get(0);
                    if sessions == 0 {
                        return Ok(());
                    }
                    anyhow::ensure!(Instant::now() < deadline, "the plugin's backup session is still open {THAW_WAIT_MAX:?} after the thaw");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// PostgreSQL's commit order (xid -> commit LSN) from the production server's WAL.
    fn commit_order(&self) -> anyhow::Result<Option<HashMap<u64, u64>>> {
        match self {
            Rig::Mysql(_) => Ok(None),
            Rig::Postgres(r) => Ok(Some(postgres::commit_lsns(&r.wal_dir)?)),
        }
    }
}

/// A backup the case took, with when it ran.
struct Taken {
    record: BackupRecord,
    started: Instant,
    done: Instant,
}

struct RealCase {
    cfg: CaseConfig,
    rig: Rig,
    /// Acknowledged transactions of the current timeline (an in-place restore cuts it).
    history: Vec<Ack>,
    taken: HashMap<String, Taken>,
    next_writer: i32,
    result: CaseResult,
}

impl RealCase {
    fn violation(&mut self, message: String) {
        tracing::warn!(%message, "violation");
        self.result.violations.push(message);
    }

    async fn start_writers(&mut self, budget: u64, pace: Option<Duration>) -> Option<Writers> {
        let sinks = match self.rig.sinks().await {
            Ok(s) => s,
            Err(e) => {
                self.violation(format!("the writers could not connect: {e:#}"));
                return None;
            }
        };
        let writers = Writers::start_with_budget(self.next_writer, sinks, Some(budget), pace);
        self.next_writer += WRITERS;
        Some(writers)
    }

    async fn finish_writers(&mut self, writers: Option<Writers>) {
        let Some(writers) = writers else { return };
        match writers.finish().await {
            Ok(acks) => self.history.extend(acks),
            Err(e) => self.violation(format!("a writer failed: {e:#}")),
        }
    }

    fn live_backups(&self) -> Vec<BackupRecord> {
        self.rig.orchestrator().catalog.backups(Some(&self.rig.app().name)).unwrap_or_default().into_iter().filter(|b| b.state == BackupState::Complete && !b.expired).collect()
    }

    async fn run_op(&mut self, op: &Op) {
        match op {
            Op::Work { commits, .. } => {
                let total = u64::from(*commits).max(1) * WORK_SCALE;
                let writers = self.start_writers(total.div_ceil(WRITERS as u64), None).await;
                self.finish_writers(writers).await;
            }
            Op::Backup { .. } => self.backup().await,
            Op::RestoreClone { backup, .. } => self.restore(*backup, false).await,
            Op::RestoreInPlace { backup, .. } => self.restore(*backup, true).await,
            Op::Retention { keep_last, .. } => {
                let policy = Policy { name: "scenario".into(), schedule: Schedule::Interval { every: Duration::from_secs(60) }, keep_last: Some(u32::from(*keep_last)), max_age: None };
                if let Err(e) = self.rig.orchestrator().apply_retention(self.rig.app(), &policy).await {
                    self.violation(format!("retention failed with no fault armed: {e}"));
                }
            }
        }
        self.measure_rpo();
    }

    async fn backup(&mut self) {
        self.result.backups += 1;
        let writers = self.start_writers(BACKUP_LOAD, Some(BACKUP_LOAD_PACE)).await;
        let started = Instant::now();
        let outcome = self.rig.orchestrator().backup(self.rig.app(), self.rig.plugin()).await;
        let done = Instant::now();
        self.finish_writers(writers).await;
        let record = match outcome {
            Ok(o) => o.record,
            Err(e) => return self.violation(format!("a backup failed with no fault armed: {e}")),
        };
        if record.state == BackupState::Complete {
            self.result.backups_complete += 1;
        }
        if record.consistency != Some(Consistency::Application) {
            self.violation(format!("backup {} under no fault is {:?}, not application-consistent: {:?}", record.id, record.consistency, record.evidence));
        }
        if let (Some(granted), Some(released)) = (record.evidence.lock_granted, record.evidence.lock_released) {
            let held = (released - granted).to_std().unwrap_or_default();
            self.result.freeze_windows_ms.push(held.as_secs_f64() * 1000.0);
            if held > self.cfg.freeze_timeout {
                self.result.freeze_bound_breaches += 1;
                self.violation(format!("backup {} held the lock for {held:?} (bound {:?})", record.id, self.cfg.freeze_timeout));
            }
        }
        if let Err(e) = self.rig.check_thawed().await {
            self.result.freeze_bound_breaches += 1;
            self.violation(format!("after backup {}: {e:#}", record.id));
        }
        self.taken.insert(record.id.clone(), Taken { record, started, done });
    }

    /// The restored `rows` against the history, for backup `id`.
    fn check_rows(&self, id: &str, rows: &BTreeSet<Row>, commits: Option<&HashMap<u64, u64>>) -> Result<usize, String> {
        let t = self.taken.get(id).ok_or_else(|| format!("backup {id} is not one this case took"))?;
        let point = t.record.evidence.consistency_point.as_ref().ok_or_else(|| format!("backup {id} has no consistency point"))?;
        match commits {
            Some(commits) => {
                let lsn = point.0.strip_prefix("redo=").and_then(postgres::parse_lsn).ok_or_else(|| format!("consistency point {point} is not redo=<lsn>"))?;
                postgres::check_restore(&self.history, commits, rows, lsn, t.done).map(|c| c.rows)
            }
            None => {
                let limit = gtid_seq(stasis_core::plugins::mysql::gtid_of(point)).ok_or_else(|| format!("consistency point {point} has no GTID"))?;
                let known: HashMap<Row, u64> = self.history.iter().map(|a| ((a.writer, a.seq), a.txid)).collect();
                if let Some(row) = rows.iter().find(|r| !known.contains_key(*r)) {
                    return Err(format!("row {row:?} is in the restore but no writer saw it acknowledged"));
                }
                let missing: Vec<_> = known.iter().filter(|(r, seq)| **seq <= limit && !rows.contains(*r)).collect();
                let extra: Vec<_> = known.iter().filter(|(r, seq)| **seq > limit && rows.contains(*r)).collect();
                if !missing.is_empty() || !extra.is_empty() {
                    return Err(format!(
                        "restored rows differ from the commits within {point}: {} acknowledged commits missing (e.g. {:?}), {} commits after the point present (e.g. {:?})",
                        missing.len(),
                        missing.first(),
                        extra.len(),
                        extra.first()
                    ));
                }
                Ok(rows.len())
            }
        }
    }

    async fn restore(&mut self, which: u8, in_place: bool) {
        let live: Vec<BackupRecord> = self.live_backups().into_iter().filter(|b| b.consistency == Some(Consistency::Application) && self.taken.contains_key(&b.id)).collect();
        if live.is_empty() {
            return;
        }
        let backup = live[which as usize % live.len()].clone();
        self.result.restores += 1;
        // The commit order from the WAL as it is now: an in-place restore rewinds it.
        let commits = match self.rig.commit_order() {
            Ok(c) => c,
            Err(e) => return self.violation(format!("reading the commit order: {e:#}")),
        };
        let (orchestrator, app, plugin) = (self.rig.orchestrator(), self.rig.app(), self.rig.plugin());
        let outcome = if in_place { orchestrator.restore_in_place(app, &backup.id, plugin).await } else { orchestrator.restore_to_clone(app, &backup.id, plugin).await };
        let record = match outcome {
            Ok(r) => r,
            Err(e) => return self.violation(format!("restoring backup {} ({}) failed with no fault armed: {e}", backup.id, if in_place { "in place" } else { "to a clone" })),
        };
        let where_ = if in_place { "in place" } else { "to a clone" };
        if record.recovered_point != backup.evidence.consistency_point {
            self.result.inconsistent_restores += 1;
            self.violation(format!("backup {} restored {where_} recovered at {:?}, not its point {:?}", backup.id, record.recovered_point, backup.evidence.consistency_point));
        }
        let rows = match &record.mode {
            RestoreMode::Clone { clone_names } => self.rig.rows_of_clone(clone_names).await,
            RestoreMode::InPlace => self.rig.rows().await,
        };
        match rows {
            Err(e) => self.violation(format!("reading backup {} restored {where_}: {e:#}", backup.id)),
            Ok(rows) => {
                if let Err(e) = self.check_rows(&backup.id, &rows, commits.as_ref()) {
                    self.result.inconsistent_restores += 1;
                    self.violation(format!("backup {} restored {where_}: {e}", backup.id));
                }
                if in_place {
                    // The lost transactions leave the timeline.
                    self.history.retain(|a| rows.contains(&(a.writer, a.seq)));
                }
            }
        }
        if let RestoreMode::Clone { .. } = record.mode {
            if let Err(e) = self.rig.orchestrator().delete_clone_restore(&record.id).await {
                self.violation(format!("deleting the clones of restore {}: {e}", record.id));
            }
        }
    }

    /// Acknowledged transactions the newest live backup does not hold (MariaDB: by GTID;
    /// PostgreSQL, conservatively: acknowledged after the backup started).
    fn measure_rpo(&mut self) {
        let newest = self.live_backups().into_iter().filter_map(|b| self.taken.get(&b.id)).max_by_key(|t| t.started);
        let held = match newest {
            None => 0,
            Some(t) => match t.record.evidence.consistency_point.as_ref().map(|p| gtid_seq(stasis_core::plugins::mysql::gtid_of(p))) {
                Some(Some(limit)) => self.history.iter().filter(|a| a.txid <= limit).count(),
                _ => self.history.iter().filter(|a| a.acked <= t.started).count(),
            },
        };
        let rpo = self.history.len().saturating_sub(held) as u64;
        self.result.rpo_transactions_max = self.result.rpo_transactions_max.max(rpo);
    }
}

/// The array and the catalog agree: no orphan snapshot or clone, no unfinished backup.
pub(super) fn check_array(orchestrator: &Orchestrator, app: &stasis_core::domain::AppSpec, sim: &SimWithMounts, result: &mut CaseResult) {
    let mut violation = |message: String| {
        tracing::warn!(%message, "violation");
        result.violations.push(message);
    };
    let live: Vec<BackupRecord> = orchestrator.catalog.backups(Some(&app.name)).unwrap_or_default().into_iter().filter(|b| b.state == BackupState::Complete && !b.expired).collect();
    let app_volumes = app.volumes.clone();
    let (snapshots, volumes) = sim.sim().sim().read(|s| {
        let snaps: Vec<(String, String, String)> = s.volumes.values().filter(|v| app_volumes.contains(&v.name)).flat_map(|v| v.snapshots.iter().map(move |snap| (v.uuid.clone(), snap.uuid.clone(), snap.name.clone()))).collect();
        let vols: Vec<String> = s.volumes.values().map(|v| v.name.clone()).collect();
        (snaps, vols)
    });
    let mut orphans = 0;
    for (volume, uuid, name) in &snapshots {
        if name.starts_with("stasis_") && !live.iter().any(|b| b.snapshots.iter().any(|s| s.snapshot_uuid == *uuid && s.volume_uuid == *volume)) {
            orphans += 1;
            violation(format!("orphan snapshot {name} on volume {volume}"));
        }
    }
    for b in &live {
        for s in &b.snapshots {
            if !snapshots.iter().any(|(_, uuid, _)| *uuid == s.snapshot_uuid) {
                orphans += 1;
                violation(format!("live backup {} lacks its snapshot on {}", b.id, s.volume_name));
            }
        }
    }
    for name in volumes.iter().filter(|n| !app_volumes.contains(n)) {
        orphans += 1;
        violation(format!("orphan volume {name}"));
    }
    for b in orchestrator.catalog.backups(Some(&app.name)).unwrap_or_default() {
        if !b.state.is_final() {
            violation(format!("backup {} is still {:?}", b.id, b.state));
        }
    }
    result.orphans += orphans;
}

/// Run one case on a fresh server and check it.
pub async fn run_case(engine: Engine, spec: &CaseSpec, cfg: CaseConfig) -> CaseResult {
    let rig = match Rig::start(engine, spec, &cfg).await {
        Ok(r) => r,
        Err(e) => return CaseResult { violations: vec![format!("the case could not be set up: {e:#}")], ..Default::default() },
    };
    let mut case = RealCase { cfg, rig, history: Vec::new(), taken: HashMap::new(), next_writer: 0, result: CaseResult::default() };
    for op in &spec.ops {
        case.run_op(op).await;
    }
    check_array(case.rig.orchestrator(), case.rig.app(), case.rig.sim(), &mut case.result);
    // Dropping the rig stops the servers, then unmounts.
    case.result
}

#[cfg(test)]
mod tests {
    #[test]
    fn gtid_sequence_numbers() {
        assert_eq!(super::gtid_seq("0-1-42"), Some(42));
        assert_eq!(super::gtid_seq("0-1-7,1-1-9"), Some(9));
        assert_eq!(super::gtid_seq(""), None);
    }
}
