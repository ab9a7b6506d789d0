//! Bench: `stasis torture` throughput (with a per-fault-kind profile) and the freeze window
//! of application-consistent backups on a loopback simulator with no faults.
//!
//! Run with `cargo bench -p stasis-scenarios --bench harness`. Without `--bench` (as under
//! `cargo test --all-targets`) it returns at once.
//!
//! Knobs (environment): HARNESS_CASES (all-faults campaign, default 300), HARNESS_CASES_NONE
//! (no-fault campaign, default 300), HARNESS_CASES_PER_KIND (profile, default 40),
//! HARNESS_BACKUPS (per app, default 1000), HARNESS_RETENTION_EVERY (default 100; 0 =
//! never), HARNESS_SWEEP_BACKUPS (per point of the snapshot-count sweep, default 100; 0 =
//! no sweep), HARNESS_SKIP_TORTURE / HARNESS_SKIP_FREEZE.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ontap_client::{OntapClient, OntapConfig};
use ontap_sim::model::cluster::{ClusterConfig, Selector, SnapshotModify, VolumeCreate};
use ontap_sim::SimConfig;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stasis_core::catalog::Catalog;
use stasis_core::clock::SystemClock;
use stasis_core::domain::{AppKind, AppSpec, Consistency, ConsistencyPoint, Policy, Schedule};
use stasis_core::plugin::{AppPlugin, PluginError, RecoveryReport, RecoveryTarget};
use stasis_core::plugins::simdb::{SimDb, SimDbVolumes};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::storage::{ConsistencyGroupInfo, SnapshotInfo, Storage, StorageResult, VolumeInfo};
use stasis_core::workflow::{Crashed, Orchestrator, SeededIds, Step, StepHook};
use stasis_scenarios::sim_data::SimVolumeData;
use stasis_scenarios::torture::{self, FaultKind, FaultSet, PluginMode, TortureOptions, TortureReport};

const GOAL_CASES_PER_MIN: f64 = 1000.0;
const GOAL_FREEZE_P50_MS: f64 = 2.0;
const GOAL_FREEZE_P99_MS: f64 = 10.0;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "NOT MET"
    }
}

/// CPU seconds (user + system, all threads) this process has used so far (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(14) + ticks(15)) / 100.0
}

#[derive(Clone, Copy)]
struct Pct {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

fn pct(values: &[f64]) -> Pct {
    if values.is_empty() {
        return Pct { p50: 0.0, p90: 0.0, p99: 0.0, max: 0.0, mean: 0.0 };
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    // Same rule as the torture report (nearest rank on n-1).
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Pct { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: *v.last().unwrap(), mean: v.iter().sum::<f64>() / v.len() as f64 }
}

fn fmt_pct(p: Pct) -> String {
    format!("p50 {:>7.3}  p90 {:>7.3}  p99 {:>7.3}  max {:>7.3}  mean {:>7.3}", p.p50, p.p90, p.p99, p.max, p.mean)
}

// ------------------------------------------------------------------ part 1: torture

fn cores() -> f64 {
    std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0)
}

struct Timed {
    report: TortureReport,
    secs: f64,
    cpu: f64,
    /// Wall-clock seconds of each case (from the progress callback).
    case_secs: Vec<f64>,
}

async fn campaign(cases: u64, seed: u64, faults: FaultSet) -> Timed {
    let opts = TortureOptions { cases, seed, mode: PluginMode::App, faults, ..TortureOptions::default() };
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let mut last = started;
    let mut case_secs = Vec::with_capacity(cases as usize);
    let report = torture::run_campaign(&opts, |_, _| {
        let now = Instant::now();
        case_secs.push((now - last).as_secs_f64());
        last = now;
    })
    .await;
    Timed { report, secs: started.elapsed().as_secs_f64(), cpu: cpu_seconds() - cpu0, case_secs }
}

fn campaign_line(label: &str, t: &Timed) -> String {
    let r = &t.report;
    format!(
        "  {label:<22} {:>4} cases  {:>6.2} s  {:>6.0} cases/min  cpu {:>5.1}% of {} cores  backups {}/{} complete  violations {}",
        r.cases,
        t.secs,
        r.cases_per_minute,
        100.0 * t.cpu / t.secs.max(1e-9) / cores(),
        cores(),
        r.backups_complete,
        r.backups,
        r.violations()
    )
}

/// The fault kinds a case arms (whether or not they hit).
fn case_kinds(seed: u64, index: u64, faults: &FaultSet) -> Vec<FaultKind> {
    let spec = torture::spec::generate(torture::spec::case_seed(seed, index), faults).current();
    let mut kinds: Vec<FaultKind> = spec.ops.iter().filter_map(|op| op.fault().map(|f| f.kind)).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

async fn torture_bench() {
    let cases = env_u64("HARNESS_CASES", 300);
    let cases_none = env_u64("HARNESS_CASES_NONE", 300);
    let per_kind = env_u64("HARNESS_CASES_PER_KIND", 40);
    let seed = 1;
    let defaults = TortureOptions::default();
    println!("== 1. stasis torture throughput (app mode, seed {seed}, freeze timeout {:?}, {} cores) ==", defaults.freeze_timeout, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));

    let all = campaign(cases, seed, FaultSet::all()).await;
    println!("{}", campaign_line("faults all", &all));
    let none = campaign(cases_none, seed, FaultSet::none()).await;
    println!("{}", campaign_line("faults none", &none));
    let rate = all.report.cases_per_minute;
    println!("  goal >= {GOAL_CASES_PER_MIN:.0} cases/min (faults all): {:.0} -> {}", rate, met(rate >= GOAL_CASES_PER_MIN));
    println!("  freeze window in the all-faults campaign (ms): p50 {:.2}  p99 {:.2}  max {:.2}", all.report.freeze_window_ms.p50, all.report.freeze_window_ms.p99, all.report.freeze_window_ms.max);
    let c = pct(&all.case_secs.iter().map(|s| s * 1000.0).collect::<Vec<_>>());
    println!("  case wall ms (faults all):  {}", fmt_pct(c));
    let c = pct(&none.case_secs.iter().map(|s| s * 1000.0).collect::<Vec<_>>());
    println!("  case wall ms (faults none): {}", fmt_pct(c));

    // Where the all-faults campaign's time goes, case by case: wall time of the cases that
    // arm each kind, against the no-fault mean case.
    let base_ms = 1000.0 * none.secs / none.report.cases.max(1) as f64;
    let mut by_kind: BTreeMap<FaultKind, (u64, f64)> = BTreeMap::new();
    let mut slow: Vec<(f64, u64, Vec<FaultKind>)> = Vec::new();
    for (i, s) in all.case_secs.iter().enumerate() {
        let kinds = case_kinds(seed, i as u64, &FaultSet::all());
        for k in &kinds {
            let e = by_kind.entry(*k).or_default();
            e.0 += 1;
            e.1 += s * 1000.0;
        }
        slow.push((s * 1000.0, i as u64, kinds));
    }
    slow.sort_by(|a, b| b.0.total_cmp(&a.0));
    let n_slow = 10.min(slow.len());
    let slow_total: f64 = slow[..n_slow].iter().map(|s| s.0).sum();
    println!("  slowest {n_slow} cases (faults all) take {:.0} ms of {:.0} ms ({:.0}%):", slow_total, all.secs * 1000.0, 100.0 * slow_total / (all.secs * 1000.0));
    for (ms, i, kinds) in &slow[..n_slow] {
        println!("    case #{i:<4} {ms:>7.1} ms  arms {}", kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(","));
    }

    // Profile: one small campaign per fault kind.
    println!();
    println!("  profile: {per_kind} cases per fault kind (FaultSet(vec![kind])), no-fault mean case {base_ms:.1} ms");
    println!("    {:<22} {:>7} {:>8} {:>9} {:>10} {:>12} {:>10} {:>16}", "fault kind", "hits", "secs", "ms/case", "cases/min", "extra ms/hit", "cpu", "est. s in 'all'");
    let mut rows = Vec::new();
    for (k, kind) in FaultKind::ALL.iter().enumerate() {
        let t = campaign(per_kind, seed.wrapping_add(1000 + k as u64), FaultSet(vec![*kind])).await;
        let hits = t.report.faults.get(&kind.name()).copied().unwrap_or(0);
        let ms_case = 1000.0 * t.secs / t.report.cases.max(1) as f64;
        let extra = if hits > 0 { (ms_case - base_ms) * t.report.cases as f64 / hits as f64 } else { 0.0 };
        let hits_in_all = all.report.faults.get(&kind.name()).copied().unwrap_or(0);
        let est = extra.max(0.0) * hits_in_all as f64 / 1000.0;
        rows.push((*kind, hits, t.secs, ms_case, t.report.cases_per_minute, extra, 100.0 * t.cpu / t.secs.max(1e-9) / cores(), est, t.report.violations()));
    }
    rows.sort_by(|a, b| b.7.total_cmp(&a.7));
    let mut est_total = 0.0;
    for (kind, hits, secs, ms_case, cpm, extra, cpu, est, violations) in &rows {
        est_total += est;
        let v = if *violations > 0 { format!("  VIOLATIONS {violations}") } else { String::new() };
        println!("    {:<22} {:>7} {:>8.2} {:>9.1} {:>10.0} {:>12.1} {:>9.1}% {:>16.2}{v}", kind.name(), hits, secs, ms_case, cpm, extra, cpu, est);
    }
    let base_in_all = base_ms * all.report.cases as f64 / 1000.0;
    println!(
        "    model of the all-faults run: {:.2} s no-fault baseline + {:.2} s fault extras = {:.2} s (measured {:.2} s)",
        base_in_all,
        est_total,
        base_in_all + est_total,
        all.secs
    );
    println!("  all-faults cases arming each kind (share of wall time; a case may arm several kinds):");
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    for (kind, (n, ms)) in kinds {
        println!("    {:<22} {:>4} cases  {:>8.0} ms  mean {:>6.1} ms/case  ({:>4.1}% of wall)", kind.name(), n, ms, ms / n as f64, 100.0 * ms / (all.secs * 1000.0));
    }
}

// ------------------------------------------------------------------ part 2: freeze window

/// Same client settings as the torture world.
fn client_config(base_url: &str, password: &str) -> OntapConfig {
    stasis_scenarios::torture::world::client_config(base_url, password, stasis_scenarios::torture::world::CLIENT_TIMEOUT_DEFAULT)
}

/// Timestamps of the last backup: each step boundary, and the plugin and snapshot calls.
#[derive(Default)]
struct Probe {
    steps: Mutex<Vec<(Step, Instant)>>,
    quiesce: Mutex<Option<(Instant, Instant)>>,
    unquiesce: Mutex<Vec<(Instant, Instant)>>,
    snapshot: Mutex<Option<(Instant, Instant)>>,
    /// `snapshot_by_name` calls (the verification after the thaw): the same GET the client
    /// makes inside the freeze to read the new snapshot back.
    lookups: Mutex<Vec<(Instant, Instant)>>,
}

impl Probe {
    fn reset(&self) {
        self.steps.lock().clear();
        *self.quiesce.lock() = None;
        self.unquiesce.lock().clear();
        *self.snapshot.lock() = None;
        self.lookups.lock().clear();
    }
    fn step(&self, step: Step) -> Option<Instant> {
        self.steps.lock().iter().find(|(s, _)| *s == step).map(|(_, t)| *t)
    }
}

struct ProbeHook(Arc<Probe>);

impl StepHook for ProbeHook {
    fn at(&self, step: Step) -> Result<(), Crashed> {
        self.0.steps.lock().push((step, Instant::now()));
        Ok(())
    }
}

struct ProbePlugin {
    db: Arc<SimDb>,
    probe: Arc<Probe>,
}

#[async_trait]
impl AppPlugin for ProbePlugin {
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        let t0 = Instant::now();
        let r = self.db.quiesce().await;
        *self.probe.quiesce.lock() = Some((t0, Instant::now()));
        r
    }
    async fn unquiesce(&self) -> Result<(), PluginError> {
        let t0 = Instant::now();
        let r = self.db.unquiesce().await;
        self.probe.unquiesce.lock().push((t0, Instant::now()));
        r
    }
    async fn stop(&self) -> Result<(), PluginError> {
        self.db.stop().await
    }
    async fn start(&self) -> Result<(), PluginError> {
        self.db.start().await
    }
    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        self.db.recover(target).await
    }
}

/// The ONTAP client with the snapshot requests timed.
struct ProbeStorage {
    inner: Arc<dyn Storage>,
    probe: Arc<Probe>,
}

#[async_trait]
impl Storage for ProbeStorage {
    async fn warm_up(&self) -> StorageResult<()> {
        self.inner.warm_up().await
    }
    async fn volumes_by_name(&self, svm: &str, names: &[String]) -> StorageResult<Vec<VolumeInfo>> {
        self.inner.volumes_by_name(svm, names).await
    }
    async fn volume(&self, uuid: &str) -> StorageResult<VolumeInfo> {
        self.inner.volume(uuid).await
    }
    async fn create_snapshot(&self, volume_uuid: &str, name: &str, deadline: Duration) -> StorageResult<SnapshotInfo> {
        let t0 = Instant::now();
        let r = self.inner.create_snapshot(volume_uuid, name, deadline).await;
        *self.probe.snapshot.lock() = Some((t0, Instant::now()));
        r
    }
    async fn take_snapshot(&self, volume_uuid: &str, name: &str, deadline: Duration) -> StorageResult<()> {
        let t0 = Instant::now();
        let r = self.inner.take_snapshot(volume_uuid, name, deadline).await;
        *self.probe.snapshot.lock() = Some((t0, Instant::now()));
        r
    }
    async fn take_cg_snapshot(&self, cg_uuid: &str, name: &str, deadline: Duration) -> StorageResult<()> {
        let t0 = Instant::now();
        let r = self.inner.take_cg_snapshot(cg_uuid, name, deadline).await;
        *self.probe.snapshot.lock() = Some((t0, Instant::now()));
        r
    }
    async fn snapshot_by_name(&self, volume_uuid: &str, name: &str) -> StorageResult<Option<SnapshotInfo>> {
        let t0 = Instant::now();
        let r = self.inner.snapshot_by_name(volume_uuid, name).await;
        self.probe.lookups.lock().push((t0, Instant::now()));
        r
    }
    async fn snapshots(&self, volume_uuid: &str) -> StorageResult<Vec<SnapshotInfo>> {
        self.inner.snapshots(volume_uuid).await
    }
    async fn delete_snapshot(&self, volume_uuid: &str, snapshot_uuid: &str) -> StorageResult<()> {
        self.inner.delete_snapshot(volume_uuid, snapshot_uuid).await
    }
    async fn ensure_consistency_group(&self, svm: &str, name: &str, volume_uuids: &[String]) -> StorageResult<ConsistencyGroupInfo> {
        self.inner.ensure_consistency_group(svm, name, volume_uuids).await
    }
    async fn create_cg_snapshot(&self, cg_uuid: &str, name: &str, deadline: Duration) -> StorageResult<Vec<SnapshotInfo>> {
        let t0 = Instant::now();
        let r = self.inner.create_cg_snapshot(cg_uuid, name, deadline).await;
        *self.probe.snapshot.lock() = Some((t0, Instant::now()));
        r
    }
    async fn restore_volume(&self, volume_uuid: &str, snapshot_name: &str) -> StorageResult<()> {
        self.inner.restore_volume(volume_uuid, snapshot_name).await
    }
    async fn restore_consistency_group(&self, cg_uuid: &str, snapshot_name: &str) -> StorageResult<()> {
        self.inner.restore_consistency_group(cg_uuid, snapshot_name).await
    }
    async fn clone_volume(&self, parent_volume_uuid: &str, snapshot_name: &str, clone_name: &str, junction_path: Option<&str>) -> StorageResult<VolumeInfo> {
        self.inner.clone_volume(parent_volume_uuid, snapshot_name, clone_name, junction_path).await
    }
    async fn split_clone(&self, volume_uuid: &str) -> StorageResult<()> {
        self.inner.split_clone(volume_uuid).await
    }
    async fn delete_volume(&self, volume_uuid: &str) -> StorageResult<()> {
        self.inner.delete_volume(volume_uuid).await
    }
}

/// One backup's measurements, in milliseconds.
#[derive(Clone, Copy, Default)]
struct Sample {
    freeze_db: f64,
    end_to_end: f64,
    snapshot: f64,
    quiesce: f64,
    /// Quiesce returned -> snapshot request sent (step hook, watchdog arm, ...).
    to_snapshot: f64,
    /// Snapshot returned -> database thawed (watchdog abort, unquiesce call).
    to_thaw: f64,
    /// Freeze window as the orchestrator records it (lock requested -> released).
    freeze_evidence: f64,
    pre_freeze: f64,
    post_freeze: f64,
    /// One snapshot lookup GET (measured after the thaw, during verification).
    lookup: f64,
    /// The snapshot request minus its read-back GETs (one per volume): the POST alone.
    post_only: f64,
}

const N_KEYS: u32 = 1200;

/// One simulator, one ONTAP client, one orchestrator (wired as in the torture world) and
/// the probes around them.
struct Rig {
    sim: ontap_sim::RunningSim,
    orchestrator: Orchestrator,
    probe: Arc<Probe>,
    logs: torture::LogCapture,
    freeze_timeout: Duration,
}

struct App {
    label: &'static str,
    spec: AppSpec,
    volume_uuids: Vec<String>,
    db: Arc<SimDb>,
    plugin: Arc<dyn AppPlugin>,
    rng: ChaCha8Rng,
}

#[derive(Default)]
struct Run {
    samples: Vec<Sample>,
    failed: u64,
    crash_consistent: u64,
    commits: u64,
    secs: f64,
}

impl Run {
    fn col(&self, f: fn(&Sample) -> f64) -> Vec<f64> {
        self.samples.iter().map(f).collect()
    }
}

impl Rig {
    /// `n` measured backups after `warmup` unmeasured ones, with a light write load
    /// committing between backups and retention (keep the last 10) every `retention_every`.
    async fn backups(&self, app: &mut App, n: usize, warmup: usize, retention_every: usize) -> Run {
        let policy = Policy { name: "bench".into(), schedule: Schedule::Interval { every: Duration::from_secs(60) }, keep_last: Some(10), max_age: None };
        let mut run = Run { samples: Vec::with_capacity(n), ..Run::default() };
        let started = Instant::now();
        let db = app.db.clone();
        for i in 0..warmup + n {
            for _ in 0..5 {
                if db.try_transfer(app.rng.gen_range(0..N_KEYS), app.rng.gen_range(0..N_KEYS), app.rng.gen_range(1..200)).is_ok() {
                    run.commits += 1;
                }
                let _ = db.background_step(&mut app.rng);
            }
            if retention_every > 0 && i % retention_every == retention_every - 1 {
                // Keep the volumes well below ONTAP's 1023 snapshots (outside the measurement).
                let _ = self.orchestrator.apply_retention(&app.spec, &policy).await;
            }
            let _ = self.logs.take();
            self.probe.reset();
            let t0 = Instant::now();
            let outcome = self.orchestrator.backup(&app.spec, app.plugin.clone()).await;
            let t1 = Instant::now();
            let record = match outcome {
                Ok(done) => done.record,
                Err(e) => {
                    run.failed += 1;
                    eprintln!("backup {i} of {} failed: {e}", app.spec.name);
                    continue;
                }
            };
            if record.consistency != Some(Consistency::Application) {
                run.crash_consistent += 1;
            }
            if i < warmup {
                continue;
            }
            let freeze = db.freeze_log().last().cloned().expect("a freeze was logged");
            let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
            let (q0, q1) = self.probe.quiesce.lock().expect("quiesce ran");
            let (s0, s1) = self.probe.snapshot.lock().expect("snapshot ran");
            let thawed = freeze.ended.map(|t| t.into_std()).unwrap_or(t1);
            let ev = &record.evidence;
            let lookups: Vec<f64> = self.probe.lookups.lock().iter().map(|(a, b)| ms(*a, *b)).collect();
            let lookup_total: f64 = lookups.iter().sum();
            run.samples.push(Sample {
                freeze_db: freeze.duration(tokio::time::Instant::now()).as_secs_f64() * 1000.0,
                end_to_end: ms(t0, t1),
                snapshot: ms(s0, s1),
                quiesce: ms(q0, q1),
                to_snapshot: ms(q1, s0),
                to_thaw: ms(s1, thawed),
                freeze_evidence: match (ev.lock_requested, ev.lock_released) {
                    (Some(a), Some(b)) => (b - a).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                    _ => f64::NAN,
                },
                pre_freeze: ms(t0, self.probe.step(Step::QuiesceIntentRecorded).unwrap_or(q0)),
                post_freeze: ms(thawed, t1),
                lookup: lookup_total / lookups.len().max(1) as f64,
                post_only: ms(s0, s1) - lookup_total,
            });
        }
        run.secs = started.elapsed().as_secs_f64();
        run
    }

    /// Put exactly `n` filler snapshots on each of the app's volumes (straight on the array).
    fn fillers(&self, app: &App, n: usize) -> anyhow::Result<()> {
        let now = chrono::Utc::now();
        for volume in &app.volume_uuids {
            self.sim
                .sim()
                .transact(|s| {
                    let existing: Vec<String> = s.volume(volume)?.snapshots.iter().filter(|x| x.name.starts_with("filler_")).map(|x| x.uuid.clone()).collect();
                    for uuid in existing.iter().skip(n) {
                        s.delete_snapshot(volume, uuid)?;
                    }
                    for i in existing.len()..n {
                        s.create_snapshot(volume, &format!("filler_{i}"), SnapshotModify::default(), now)?;
                    }
                    Ok(())
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    }

    fn snapshot_count(&self, app: &App) -> usize {
        self.sim.sim().read(|s| app.volume_uuids.iter().filter_map(|v| s.volume(v).ok().map(|v| v.snapshots.len())).max().unwrap_or(0))
    }
}

async fn freeze_bench() -> anyhow::Result<bool> {
    let n = env_u64("HARNESS_BACKUPS", 1000) as usize;
    let warmup = 20usize;
    // Retention (keep the last 10) every this many backups; 0: never (the volumes then end
    // with ~1020 snapshots, just under ONTAP's 1023).
    let retention_every = env_u64("HARNESS_RETENTION_EVERY", 100) as usize;
    let freeze_timeout = TortureOptions::default().freeze_timeout;
    println!("== 2. freeze window of application-consistent backups (loopback simulator, no faults, {n} backups per app after {warmup} warm-up, retention keep 10 every {retention_every}) ==");
    let password = "bench-password";
    let sim = ontap_sim::spawn(SimConfig { cluster: ClusterConfig { seed: 7, ..ClusterConfig::default() }, password: password.into(), ..SimConfig::default() }).await?;
    let mut uuids = BTreeMap::new();
    for name in ["one_data", "two_data", "two_log"] {
        let req = VolumeCreate {
            name: name.into(),
            svm: Selector { name: Some("svm0".into()), uuid: None },
            aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
            size: Some(1 << 30),
            junction_path: Some(format!("/{name}")),
            ..Default::default()
        };
        uuids.insert(name, sim.sim().transact(|s| s.create_volume(req.clone(), chrono::Utc::now())).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let data = Arc::new(SimVolumeData::new(sim.sim().clone()));
    let initial = vec![1000u64; N_KEYS as usize];
    let probe = Arc::new(Probe::default());
    let catalog: Arc<dyn Catalog> = Arc::new(SqliteCatalog::open_in_memory()?);
    let client: Arc<dyn Storage> = Arc::new(OntapClient::new(client_config(&sim.base_url(), password))?);
    let storage: Arc<dyn Storage> = Arc::new(ProbeStorage { inner: client, probe: probe.clone() });
    let orchestrator = Orchestrator::new(storage, catalog, Arc::new(SystemClock)).with_ids(Arc::new(SeededIds::new(7))).with_hook(Arc::new(ProbeHook(probe.clone())));
    // The torture campaign installed a log capture (info level); drain it as the campaign does.
    let rig = Rig { sim, orchestrator, probe: probe.clone(), logs: torture::capture_logs(), freeze_timeout };
    let mut apps = Vec::new();
    for (label, name, volumes) in [("single volume", "one", vec!["one_data"]), ("two volumes (CG snapshot)", "two", vec!["two_data", "two_log"])] {
        let volume_uuids: Vec<String> = volumes.iter().map(|v| uuids[v].clone()).collect();
        let layout = match volume_uuids.as_slice() {
            [one] => SimDbVolumes::single(one.clone()),
            [d, l] => SimDbVolumes::split(d.clone(), l.clone()),
            _ => unreachable!("one or two volumes"),
        };
        let db = Arc::new(SimDb::create(data.clone(), layout, &initial, true, Arc::new(SystemClock))?);
        let plugin: Arc<dyn AppPlugin> = Arc::new(ProbePlugin { db: db.clone(), probe: probe.clone() });
        let spec = AppSpec { name: name.into(), kind: AppKind::Simdb, svm: "svm0".into(), volumes: volumes.iter().map(|v| v.to_string()).collect(), freeze_timeout: rig.freeze_timeout };
        apps.push(App { label, spec, volume_uuids, db, plugin, rng: ChaCha8Rng::seed_from_u64(11) });
    }

    let mut all_ok = true;
    for app in &mut apps {
        let run = rig.backups(app, n, warmup, retention_every).await;
        let freeze = pct(&run.col(|s| s.freeze_db));
        println!(
            "  app {}: {} backups measured, {} failed, {} not application-consistent, {} commits between backups, {:.2} s ({:.0} backups/s)",
            app.label,
            run.samples.len(),
            run.failed,
            run.crash_consistent,
            run.commits,
            run.secs,
            (n + warmup) as f64 / run.secs
        );
        println!("    freeze window (simdb freeze_log, ms)   {}", fmt_pct(freeze));
        println!("    freeze window (evidence, orchestrator) {}", fmt_pct(pct(&run.col(|s| s.freeze_evidence))));
        println!("    backup end to end (ms)                 {}", fmt_pct(pct(&run.col(|s| s.end_to_end))));
        println!("    snapshot request (ms)                  {}", fmt_pct(pct(&run.col(|s| s.snapshot))));
        println!("      its POST alone (estimate)            {}", fmt_pct(pct(&run.col(|s| s.post_only))));
        println!("      one snapshot lookup GET (verify)     {}", fmt_pct(pct(&run.col(|s| s.lookup))));
        println!("    inside the freeze: quiesce (flush)     {}", fmt_pct(pct(&run.col(|s| s.quiesce))));
        println!("      quiesced -> snapshot request sent    {}", fmt_pct(pct(&run.col(|s| s.to_snapshot))));
        println!("      snapshot returned -> thawed          {}", fmt_pct(pct(&run.col(|s| s.to_thaw))));
        println!("    before the freeze (record, resolve)    {}", fmt_pct(pct(&run.col(|s| s.pre_freeze))));
        println!("    after the thaw (record, verify)        {}", fmt_pct(pct(&run.col(|s| s.post_freeze))));
        let ok = freeze.p50 < GOAL_FREEZE_P50_MS && freeze.p99 < GOAL_FREEZE_P99_MS && run.failed == 0 && run.crash_consistent == 0;
        println!(
            "    goal freeze p50 < {GOAL_FREEZE_P50_MS} ms: {:.3} -> {};  p99 < {GOAL_FREEZE_P99_MS} ms: {:.3} -> {}",
            freeze.p50,
            met(freeze.p50 < GOAL_FREEZE_P50_MS),
            freeze.p99,
            met(freeze.p99 < GOAL_FREEZE_P99_MS)
        );
        let mut worst: Vec<&Sample> = run.samples.iter().collect();
        worst.sort_by(|a, b| b.freeze_db.total_cmp(&a.freeze_db));
        for s in worst.iter().take(3) {
            println!("    slow freeze {:>7.3} ms = quiesce {:.3} + to snapshot {:.3} + snapshot {:.3} + to thaw {:.3}", s.freeze_db, s.quiesce, s.to_snapshot, s.snapshot, s.to_thaw);
        }
        all_ok &= ok;
    }

    // The freeze against the number of snapshots already on the volume: the client reads the
    // new snapshot back (GET ...?name=) inside the freeze, and that GET grows with it.
    let sweep_n = env_u64("HARNESS_SWEEP_BACKUPS", 100) as usize;
    if sweep_n > 0 {
        println!("  freeze window vs snapshots already on each volume ({sweep_n} backups per point, retention keep 10 every 10, filler snapshots added on the array):");
        println!("    {:<27} {:>9} {:>10} {:>10} {:>10} {:>14} {:>12}", "app", "snapshots", "freeze p50", "freeze p99", "freeze max", "lookup GET p50", "POST p50");
        for app in &mut apps {
            for level in [0usize, 250, 500, 1000] {
                rig.fillers(app, level)?;
                let count = rig.snapshot_count(app);
                let run = rig.backups(app, sweep_n, 2, 10).await;
                let freeze = pct(&run.col(|s| s.freeze_db));
                println!(
                    "    {:<27} {:>9} {:>10.3} {:>10.3} {:>10.3} {:>14.3} {:>12.3}{}",
                    app.label,
                    count,
                    freeze.p50,
                    freeze.p99,
                    freeze.max,
                    pct(&run.col(|s| s.lookup)).p50,
                    pct(&run.col(|s| s.post_only)).p50,
                    if run.failed + run.crash_consistent > 0 { format!("  ({} failed, {} crash-consistent)", run.failed, run.crash_consistent) } else { String::new() }
                );
            }
            rig.fillers(app, 0)?;
        }
    }
    rig.sim.shutdown().await;
    Ok(all_ok)
}

/// The machine's 1-minute load average (other processes share its cores).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split_whitespace().next().map(str::to_string)).unwrap_or_else(|| "?".into())
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        // Install the campaign's log capture first, so both parts log alike.
        let _ = torture::capture_logs();
        println!("load average at start: {} ({} cores; other processes skew the timings)", loadavg(), cores());
        if std::env::var_os("HARNESS_SKIP_TORTURE").is_none() {
            torture_bench().await;
            println!();
        }
        if std::env::var_os("HARNESS_SKIP_FREEZE").is_none() {
            if let Err(e) = freeze_bench().await {
                println!("freeze bench failed: {e:#}");
            }
        }
        println!("load average at end: {}", loadavg());
    });
}
