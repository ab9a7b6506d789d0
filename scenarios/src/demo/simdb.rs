//! The simulated database as the demo's workload: a bank of accounts whose transfers keep
//! the total constant, data file on one volume and write-ahead log on another (one
//! consistency group). It acknowledges commits before they are flushed and writes pages
//! back ahead of the log, as a tuned production database does, so an unquiesced snapshot
//! can lose acknowledged commits or come back torn. Every restore is checked against a
//! reference model of every acknowledged transaction.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stasis_core::clock::SystemClock;
use stasis_core::domain::{AppKind, AppSpec, BackupRecord, Consistency, ConsistencyPoint, RestoreRecord};
use stasis_core::dr::Site;
use stasis_core::plugin::AppPlugin;
use stasis_core::plugins::simdb::{consistency_point, parse_consistency_point, read_recovered, CommitError, RecoveredDb, RecoveryKind, SimDb, SimDbVolumes};
use stasis_core::storage::VolumeInfo;

use super::{ms, Ctx, DemoOptions, LoadStats, RestoreCheck, RestoreOutcome, SimHost, Verdict, WorkloadImpl, SVM};
use crate::sim_data::SimVolumeData;
use stasis_core::volume_data::VolumeData;

const APP_NAME: &str = "bank";
const DATA_VOLUME: &str = "bank_data";
const LOG_VOLUME: &str = "bank_log";
const DB_VOLUME_SIZE: u64 = 1 << 30;
/// Accounts in the bank (3 data pages: a page can be written back ahead of the log).
const N_ACCOUNTS: u32 = 1200;
const INITIAL_BALANCE: u64 = 1000;
/// The "dropped table": these accounts are zeroed by the damage step.
const DAMAGE_FIRST: u32 = 100;
const DAMAGE_LAST: u32 = 299;
/// The load commits this many transfers, then sleeps `LOAD_PAUSE`.
const LOAD_BATCH: u32 = 16;
const LOAD_PAUSE: Duration = Duration::from_millis(1);
/// Chance of one step of background I/O (WAL flush, page write-back, checkpoint) per commit.
const LOAD_BACKGROUND_IO: f64 = 0.5;
/// The load runs this long before the first backup, so there is something in flight.
const LOAD_WARM_UP: Duration = Duration::from_millis(100);
/// Pause between two backups of the backup step.
const BACKUP_GAP: Duration = Duration::from_millis(20);

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


fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = digits.as_bytes().rchunks(3).map(|g| std::str::from_utf8(g).unwrap_or_default()).collect();
    groups.reverse();
    groups.join(",")
}

fn total(values: &[u64]) -> u128 {
    values.iter().map(|&v| u128::from(v)).sum()
}

/// What a site holds against what the database acknowledged at `point`.
struct SiteState {
    values_exact: bool,
    /// Values and txid both those of `point`.
    exact: bool,
    matching: usize,
    balanced: bool,
}

/// The verifier of a failover or failback: `values` at `txid` must be exactly `expected`
/// (the acknowledged state at `point`, `None` if the model never saw it) at that txid.
fn check_site_state(expected: Option<&[u64]>, point: u64, values: &[u64], txid: u64) -> SiteState {
    let matching = expected.map_or(0, |e| values.iter().zip(e).filter(|(a, b)| a == b).count());
    let values_exact = expected.is_some_and(|e| e == values);
    SiteState { values_exact, exact: values_exact && txid == point, matching, balanced: total(values) == u128::from(N_ACCOUNTS) * u128::from(INITIAL_BALANCE) }
}

fn txid_of(point: &ConsistencyPoint) -> anyhow::Result<u64> {
    parse_consistency_point(point).ok_or_else(|| anyhow!("consistency point {point} is not a simdb txid"))
}

// ---------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------

pub(crate) struct SimdbWorkload {
    data: Arc<SimVolumeData>,
    db: Arc<SimDb>,
    /// The instance on site B's mirrors (after `standby_on_b`).
    db_b: Option<Arc<SimDb>>,
    /// Where the app runs: the load commits there.
    active: Site,
    reference: Arc<Mutex<Reference>>,
    load: Option<Load>,
    load_seed: u64,
    rng: ChaCha8Rng,
    why_simdb: String,
}

impl SimdbWorkload {
    pub(crate) fn setup(host: &SimHost, opts: &DemoOptions) -> anyhow::Result<(SimdbWorkload, AppSpec)> {
        let data_uuid = host.create_volume(SVM, DATA_VOLUME, "/bank/data", DB_VOLUME_SIZE)?;
        let log_uuid = host.create_volume(SVM, LOG_VOLUME, "/bank/log", DB_VOLUME_SIZE)?;
        let data = Arc::new(SimVolumeData::new(host.sim().sim().clone()));
        let initial = vec![INITIAL_BALANCE; N_ACCOUNTS as usize];
        let db = Arc::new(SimDb::create(data.clone(), SimDbVolumes::split(data_uuid, log_uuid), &initial, true, Arc::new(SystemClock)).context("creating the simulated database on the simulator's volumes")?);
        let app = AppSpec { name: APP_NAME.into(), kind: AppKind::Simdb, svm: SVM.into(), volumes: vec![DATA_VOLUME.into(), LOG_VOLUME.into()], freeze_timeout: opts.freeze_timeout };
        let wl = SimdbWorkload {
            data,
            db,
            db_b: None,
            active: Site::A,
            reference: Arc::new(Mutex::new(Reference::new(initial))),
            load: None,
            load_seed: opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            why_simdb: opts.why_simdb.clone().unwrap_or_else(|| "chosen by the caller".into()),
        };
        Ok((wl, app))
    }

    fn plugin_db(&self, site: Site) -> Option<Arc<SimDb>> {
        match site {
            Site::A => Some(self.db.clone()),
            Site::B => self.db_b.clone(),
        }
    }

    /// Compare what a restore recovered with the reference model.
    fn judge(&self, round: u32, snapshot: String, claimed: u64, recovered: Result<RecoveredDb, String>, app: bool) -> RestoreOutcome {
        let mut out = RestoreOutcome::new(round, snapshot, consistency_point(claimed).0);
        let r = match recovered {
            Ok(r) => r,
            Err(e) => {
                out.state = format!("did not open: {e}");
                out.error = Some(e);
                return out;
            }
        };
        let reference = self.reference.lock();
        out.recovered_point = Some(consistency_point(r.last_txid).0);
        out.needed_crash_recovery = Some(r.needed_crash_recovery);
        out.lost_acknowledged_commits = claimed.saturating_sub(r.last_txid);
        out.consistent_with_its_point = reference.at(r.last_txid).is_some_and(|v| v == r.values);
        let values_match_txid = if out.consistent_with_its_point { None } else { reference.first_match(&r.values) };
        let torn = !out.consistent_with_its_point && values_match_txid.is_none();
        out.findings = r.anomalies.clone();
        out.exact = out.consistent_with_its_point && r.last_txid == claimed && r.anomalies.is_empty() && (!app || !r.needed_crash_recovery);
        let mut parts = Vec::new();
        if out.exact {
            parts.push("exact".to_string());
        } else if out.consistent_with_its_point {
            parts.push("consistent, at an earlier point".to_string());
        } else if torn {
            parts.push("TORN: matches no acknowledged state".to_string());
        } else if let Some(txid) = values_match_txid {
            parts.push(format!("values are those of txid={txid}, not of the point it reports"));
        }
        if r.needed_crash_recovery {
            parts.push(format!("{} WAL records replayed", r.n_replayed));
        }
        if let Some(a) = r.anomalies.first() {
            parts.push(format!("database saw: {a}"));
        }
        out.state = parts.join("; ");
        out.detail = serde_json::json!({
            "wal_records_replayed": r.n_replayed,
            "wal_bytes_discarded": r.discarded_wal_bytes,
            "values_match_txid": values_match_txid,
            "torn": torn,
        });
        out
    }
}

#[async_trait::async_trait]
impl WorkloadImpl for SimdbWorkload {
    fn name(&self) -> &'static str {
        "simdb"
    }

    fn note(&self) -> String {
        format!("the simulated database (simdb), a bank of accounts whose transfers keep the total constant; {}", self.why_simdb)
    }

    fn intro(&self, _ctx: &Ctx<'_>) -> Vec<String> {
        vec![
            format!("  workload  simdb, the SIMULATED database: a bank of {N_ACCOUNTS} accounts; transfers keep the total"),
            format!("            constant. Data file on volume {DATA_VOLUME}, write-ahead log on {LOG_VOLUME}. It acknowledges"),
            "            commits before they are flushed, as a tuned production database does.".into(),
            format!("            Why not MariaDB: {}.", self.why_simdb),
        ]
    }

    fn plugin(&self) -> Arc<dyn AppPlugin> {
        self.db.clone()
    }

    fn volume_role(&self, volume: &str) -> Option<&'static str> {
        match volume {
            DATA_VOLUME => Some("data"),
            LOG_VOLUME => Some("log"),
            _ => None,
        }
    }

    fn app_line(&self, _app: &AppSpec) -> String {
        format!("kind simdb, SVM {SVM}, volumes {DATA_VOLUME} + {LOG_VOLUME} (one consistency group)")
    }

    fn headline(&self, step: &str, opts: &DemoOptions) -> String {
        match step {
            "discover" => format!("discover: the volumes of SVM {SVM}, read through the ONTAP REST client"),
            "protect" => format!("protect: record app {APP_NAME} and an SLA policy in the catalog"),
            "backup" => format!("backup under write load: {} application-consistent backups while transfers commit", opts.backups),
            "damage" => format!("damage: zero accounts {DAMAGE_FIRST}-{DAMAGE_LAST} (a \"dropped table\"), committed like any write"),
            "restore" => "restore in place to the last backup, then verify against what the database acknowledged".into(),
            "crash_vs_app" => format!("crash-consistent vs application-consistent, {} rounds under write load", opts.crash_rounds),
            other => other.to_string(),
        }
    }

    async fn check_discovered(&mut self, _ctx: &Ctx<'_>, _app_volumes: &[VolumeInfo]) -> anyhow::Result<bool> {
        Ok(true)
    }

    async fn start_load(&mut self, _ctx: &Ctx<'_>, phase: u32) -> anyhow::Result<()> {
        self.stop_load().await;
        let db = self.plugin_db(self.active).ok_or_else(|| anyhow!("no database at site {:?}", self.active))?;
        self.load = Some(Load::start(db, self.reference.clone(), self.load_seed.wrapping_add(u64::from(phase))));
        Ok(())
    }

    async fn stop_load(&mut self) {
        if let Some(load) = self.load.take() {
            load.stop().await;
        }
    }

    fn warm_up(&self) -> Duration {
        LOAD_WARM_UP
    }

    fn backup_gap(&self) -> Duration {
        BACKUP_GAP
    }

    fn load_stats(&self, point: Option<&ConsistencyPoint>) -> LoadStats {
        let last = self.reference.lock().last_txid();
        let after_point = point.and_then(parse_consistency_point).map_or(0, |p| last.saturating_sub(p));
        LoadStats { acknowledged: last, after_point, met_a_freeze: self.load.as_ref().map_or(0, |l| l.counters.met_a_freeze()), failures: 0 }
    }

    fn point_known(&self, point: &ConsistencyPoint) -> bool {
        parse_consistency_point(point).is_some_and(|p| self.reference.lock().at(p).is_some())
    }

    fn freeze_mark(&self) -> usize {
        self.db.freeze_log().len()
    }

    fn freeze_windows(&self, mark: usize, _records: &[BackupRecord], bound: Duration) -> (Vec<f64>, bool) {
        let freezes: Vec<_> = self.db.freeze_log().into_iter().skip(mark).collect();
        let now = tokio::time::Instant::now();
        let windows = freezes.iter().filter(|f| f.point.is_some()).map(|f| ms(f.duration(now))).collect();
        let within = freezes.iter().all(|f| f.ended.is_some() && f.duration(now) <= bound);
        (windows, within)
    }

    fn freeze_measured_by(&self) -> &'static str {
        "as the database measured it"
    }

    async fn damage(&mut self, ctx: &Ctx<'_>, last: &BackupRecord) -> anyhow::Result<(Verdict, serde_json::Value)> {
        let load = self.load.take().ok_or_else(|| anyhow!("the write load is not running"))?;
        let stats = load.stop().await;
        ctx.say(format!("write load stopped after {} transfers ({} commit attempts met a freeze and retried)", stats.commits(), stats.met_a_freeze()));
        let point = txid_of(last.evidence.consistency_point.as_ref().ok_or_else(|| anyhow!("the last backup has no consistency point"))?)?;
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
        ctx.say(format!("one transaction, txid {txid}: accounts {DAMAGE_FIRST}-{DAMAGE_LAST} set to 0 (account {sample}: {} -> 0)", before[sample]));
        ctx.say(format!("sum of all balances {} -> {}: the books no longer balance", grouped(total_before), grouped(total_after)));
        ctx.say(format!("{} commits since the last backup (txid {} -> {txid}), the damage included", txid - point, point));
        let detail = serde_json::json!({
            "accounts_zeroed": format!("{DAMAGE_FIRST}-{DAMAGE_LAST}"),
            "txid": txid,
            "total_before": total_before,
            "total_after": total_after,
            "commits_after_last_backup": txid - point,
        });
        let verdict = Verdict { ok: zeroed && differs && total_after < total_before, summary: format!("accounts {DAMAGE_FIRST}-{DAMAGE_LAST} zeroed at txid {txid}; total {} -> {}", grouped(total_before), grouped(total_after)) };
        Ok((verdict, detail))
    }

    fn restore_mark(&self) -> usize {
        self.db.recoveries().len()
    }

    async fn check_restore(&mut self, ctx: &Ctx<'_>, last: &BackupRecord, record: &RestoreRecord, mark: usize) -> anyhow::Result<RestoreCheck> {
        let point = txid_of(last.evidence.consistency_point.as_ref().ok_or_else(|| anyhow!("the last backup has no consistency point"))?)?;
        let before_txid = self.reference.lock().last_txid();
        let expected = self.reference.lock().at(point).ok_or_else(|| anyhow!("the reference lost txid {point}"))?;
        let values = self.db.values().ok_or_else(|| anyhow!("the database did not come back up after the restore"))?;
        let txid = self.db.last_committed_txid().unwrap_or_default();
        let recovered = self.db.recoveries().into_iter().skip(mark).rev().find(|r| r.kind == RecoveryKind::InPlace).and_then(|r| r.outcome.ok());
        let values_exact = values == expected && txid == point;
        let clean = recovered.as_ref().is_some_and(|r| !r.needed_crash_recovery && r.anomalies.is_empty() && r.last_txid == point);
        let balanced = total(&values) == u128::from(N_ACCOUNTS) * u128::from(INITIAL_BALANCE);
        let matching = values.iter().zip(&expected).filter(|(a, b)| a == b).count();
        ctx.say(format!("{matching}/{N_ACCOUNTS} accounts equal what the database had acknowledged at its consistency point {}", consistency_point(point)));
        match &recovered {
            Some(r) => ctx.say(format!(
                "the database's own recovery log: crash recovery {} ({} WAL records replayed, {} bytes discarded, {} anomalies)",
                if r.needed_crash_recovery { "YES" } else { "no" },
                r.n_replayed,
                r.discarded_wal_bytes,
                r.anomalies.len()
            )),
            None => ctx.say("PROBLEM: the database recorded no successful in-place recovery"),
        }
        ctx.say(format!("sum of all balances {} ({})", grouped(total(&values)), if balanced { "balanced again" } else { "STILL WRONG" }));
        ctx.say(format!("{} commits after the backup were discarded, as an in-place restore does", before_txid - point));
        // The timeline is cut back: txids after the point will be reused.
        self.reference.lock().truncate(point);
        let exact = values_exact && clean;
        let summary = if exact && balanced {
            format!("exact at txid={point}, no crash recovery, books balance")
        } else {
            format!("NOT exact at txid={point} (values exact: {values_exact}, clean recovery: {clean}, balanced: {balanced})")
        };
        let _ = record;
        Ok(RestoreCheck {
            ok: exact && balanced,
            exact,
            summary,
            commits_discarded: before_txid - point,
            detail: serde_json::json!({ "values_exact": values_exact, "clean_recovery": clean, "total_after": total(&values), "balanced": balanced }),
        })
    }

    fn crash_vs_app_intro(&self) -> Vec<&'static str> {
        vec![
            "crash: an array-side consistency-group snapshot with NO quiesce (like a storage snapshot policy),",
            "       FlexCloned over ONTAP REST, opened by the database's own recovery (read-only)",
            "app:   Stasis's backup workflow (quiesce, snapshot, thaw), restored to a FlexClone by restore_to_clone",
        ]
    }

    fn sides(&self) -> [&'static str; 2] {
        ["array snapshot without quiesce, FlexClone, database recovery (read-only)", "Stasis backup (quiesce, consistency-group snapshot, thaw), restore_to_clone"]
    }

    fn short_point(&self, point: &str) -> String {
        point.to_string()
    }

    /// Snapshot the consistency group without quiescing, clone it over REST, and read what
    /// the database's recovery makes of it. The clones and the snapshot are removed again.
    async fn crash_round(&mut self, ctx: &Ctx<'_>, round: u32) -> anyhow::Result<RestoreOutcome> {
        tokio::time::sleep(Duration::from_millis(self.rng.gen_range(3..20))).await;
        let cg_name = ctx.app.consistency_group_name();
        let sim = ctx.site_a.sim().sim();
        let cg_uuid = sim.read(|s| s.cgs.values().find(|cg| cg.name == cg_name).map(|cg| cg.uuid.clone())).ok_or_else(|| anyhow!("consistency group {cg_name} does not exist (the backups create it)"))?;
        let name = format!("demo_crash_{round:02}");
        let acked = self.db.last_committed_txid().unwrap_or_default();
        let cg_snapshot = sim
            .transact(|s| s.create_cg_snapshot(&cg_uuid, &name, Some("crash-consistent: no quiesce".into()), chrono::Utc::now()))
            .map_err(|e| anyhow!("{e}"))
            .context("taking the crash-consistent snapshot")?;
        let mut clones = Vec::new();
        let mut error = None;
        for v in &ctx.app_volumes {
            match ctx.storage.clone_volume(&v.uuid, &name, &format!("{}_crash{round:02}", v.name), None).await {
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
            ctx.storage.delete_volume(&c.uuid).await.with_context(|| format!("deleting clone {}", c.name))?;
        }
        sim.transact(|s| s.delete_cg_snapshot(&cg_uuid, &cg_snapshot)).map_err(|e| anyhow!("{e}")).with_context(|| format!("deleting snapshot {name}"))?;
        if let Some(e) = error {
            return Err(e);
        }
        let recovered = recovered.ok_or_else(|| anyhow!("no clones to read"))?;
        Ok(self.judge(round, name, acked, recovered.map_err(|e| e.to_string()), false))
    }

    /// One backup through the workflow, restored to a clone by the workflow, checked, and
    /// the clone deleted.
    async fn app_round(&mut self, ctx: &Ctx<'_>, round: u32) -> anyhow::Result<RestoreOutcome> {
        let record = ctx.orchestrator.backup(&ctx.app, self.plugin()).await.context("backup")?.record;
        let point = txid_of(record.evidence.consistency_point.as_ref().ok_or_else(|| anyhow!("backup {} has no consistency point", record.id))?)?;
        let recoveries_before = self.db.recoveries().len();
        let restore = ctx.orchestrator.restore_to_clone(&ctx.app, &record.id, self.plugin()).await;
        let recovered = match &restore {
            Ok(_) => self.db.recoveries().into_iter().skip(recoveries_before).rev().find(|r| r.kind == RecoveryKind::Clone).map(|r| r.outcome).unwrap_or_else(|| Err("no clone recovery recorded".into())),
            Err(e) => Err(format!("restore_to_clone failed: {e}")),
        };
        if let Ok(r) = &restore {
            ctx.orchestrator.delete_clone_restore(&r.id).await.with_context(|| format!("deleting the clones of restore {}", r.id))?;
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

    async fn mirror_writable(&self, ctx: &Ctx<'_>, b_volumes: &[VolumeInfo]) -> anyhow::Result<bool> {
        // The database's own data path (the simulator's data plane), as the app would write.
        let data_b = SimVolumeData::new(ctx.site_b.sim().sim().clone());
        Ok(b_volumes.iter().any(|v| data_b.write(&v.uuid, "stray.bin", 0, b"x").is_ok()))
    }

    async fn site_a_lost(&mut self, ctx: &Ctx<'_>, point: &ConsistencyPoint) -> anyhow::Result<u64> {
        let load = self.load.take().ok_or_else(|| anyhow!("the write load is not running"))?;
        let stats = load.stop().await;
        // A crash: acknowledged commits not yet flushed are gone with the site.
        self.db.crash();
        let lost = self.reference.lock().last_txid().saturating_sub(txid_of(point)?);
        ctx.say(format!("the load at site A stopped after {} transfers; the database at A crashed (no flush)", stats.commits()));
        Ok(lost)
    }

    async fn standby_on_b(&mut self, ctx: &Ctx<'_>, b_volumes: &[VolumeInfo]) -> anyhow::Result<Arc<dyn AppPlugin>> {
        let volumes = SimDbVolumes::from_volume_infos(b_volumes).map_err(|e| anyhow!("{e}")).context("site B's mirror volumes")?;
        let data_b = Arc::new(SimVolumeData::new(ctx.site_b.sim().sim().clone()));
        let db_b = Arc::new(SimDb::standby(data_b, volumes, Arc::new(SystemClock)));
        self.db_b = Some(db_b.clone());
        Ok(db_b)
    }

    fn plugin_at(&self, site: Site) -> Option<Arc<dyn AppPlugin>> {
        self.plugin_db(site).map(|db| db as Arc<dyn AppPlugin>)
    }

    async fn tamper_on_b(&mut self) -> anyhow::Result<()> {
        let db_b = self.db_b.clone().ok_or_else(|| anyhow!("no database at site B"))?;
        // Not recorded in the reference model: a commit nobody acknowledged to the load.
        db_b.try_commit(&[(0, 7)]).map_err(|e| anyhow!("{e}")).context("the stray commit at site B")?;
        Ok(())
    }

    async fn verify_site(&mut self, ctx: &Ctx<'_>, site: Site, point: &ConsistencyPoint) -> anyhow::Result<RestoreCheck> {
        let db = self.plugin_db(site).ok_or_else(|| anyhow!("no database at site {site:?}"))?;
        let point = txid_of(point)?;
        let (values, txid) = (db.values().ok_or_else(|| anyhow!("the database at site {site:?} is not running"))?, db.last_committed_txid().unwrap_or_default());
        let reference = self.reference.lock();
        let expected = reference.at(point);
        let after_point = reference.last_txid().saturating_sub(point);
        drop(reference);
        let recovery = db.recoveries().into_iter().rev().find(|r| r.kind == RecoveryKind::InPlace).and_then(|r| r.outcome.ok());
        let clean = recovery.as_ref().is_some_and(|r| !r.needed_crash_recovery && r.anomalies.is_empty() && r.last_txid == point);
        let check = check_site_state(expected.as_deref(), point, &values, txid);
        ctx.say(format!(
            "{}/{N_ACCOUNTS} accounts equal what the database had acknowledged at txid={point}; the database at {site:?} is at txid={txid}; recovery {}",
            check.matching,
            if clean { "clean (no WAL replay)" } else { "NOT clean" }
        ));
        ctx.say(format!("sum of all balances {} ({})", grouped(total(&values)), if check.balanced { "balanced" } else { "WRONG" }));
        let answers = db.is_running();
        // The timeline is that site's from here: later txids elsewhere are gone.
        self.reference.lock().truncate(point);
        self.active = site;
        let ok = check.exact && check.balanced && clean && answers;
        let summary = if ok {
            format!("site {site:?} holds exactly txid={point}: {N_ACCOUNTS} accounts, books balance, clean recovery")
        } else {
            format!("site {site:?} is NOT exactly txid={point} (values exact: {}, at txid {txid}, clean: {clean}, balanced: {})", check.values_exact, check.balanced)
        };
        Ok(RestoreCheck {
            ok,
            exact: check.exact,
            summary,
            commits_discarded: after_point,
            detail: serde_json::json!({ "expected_txid": point, "txid": txid, "values_exact": check.values_exact, "accounts_matching": check.matching, "balanced": check.balanced, "clean_recovery": clean, "running": answers }),
        })
    }

    fn healthy(&self) -> bool {
        self.reference.lock().gaps == 0
    }

    async fn shutdown(&mut self) {
        self.stop_load().await;
    }
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
    fn the_site_verifier_fails_on_any_difference() {
        let n = N_ACCOUNTS as usize;
        let expected = vec![INITIAL_BALANCE; n];
        assert!(check_site_state(Some(&expected), 7, &expected, 7).exact);
        // One account off (the total still balances: a transfer nobody acknowledged).
        let mut moved = expected.clone();
        moved[0] -= 5;
        moved[1] += 5;
        let c = check_site_state(Some(&expected), 7, &moved, 8);
        assert!(!c.exact && !c.values_exact && c.balanced && c.matching == n - 2);
        // The right values at the wrong txid, and a point the model never acknowledged.
        assert!(!check_site_state(Some(&expected), 7, &expected, 6).exact);
        assert!(!check_site_state(None, 7, &expected, 7).exact);
        // Money appeared.
        let mut more = expected.clone();
        more[3] += 1;
        assert!(!check_site_state(Some(&expected), 7, &more, 7).balanced);
    }

    #[test]
    fn grouping() {
        assert_eq!(grouped(1_200_000), "1,200,000");
        assert_eq!(grouped(999), "999");
    }
}
