//! Scenario cases of kind `exec-hooks`: an application Stasis knows nothing about
//! (`stasis-ledger-app`, see `crate::ledger`), on FUSE-mounted simulated volumes, quiesced
//! only by the scenario's own hook commands run through core's `ExecHooksPlugin` and the
//! `Cluster` seam (a local process with the app's "container" environment: its control
//! socket in `$LEDGER_APP_CONTROL`, its tools first on `PATH`).
//!
//! - The app writes records without stop across files and volumes; `work` waits for
//!   `commits` more acknowledged records.
//! - `backup`: the orchestrator's backup with the hooks. A backup that fails because a hook
//!   failed is a clean failure (counted; the scenario's expectations judge it); any other
//!   failure is a violation. Afterwards the app must be writing again (a new record
//!   acknowledged within `RESUME_WAIT_MAX`, shorter than any pause lease the hooks ask for):
//!   an app left paused is a freeze-bound breach.
//! - `restore` (to a clone): the harness opens the copy with the checker
//!   (`ledger::check_copy`: every record complete, the volumes agree) as the plugin's
//!   `recover`, which reports `record=k`; core requires that to equal the backup's point.
//!   A torn copy or another point is an inconsistent restore, and so is a copy missing a
//!   record acknowledged before the backup started.
//! - `retention` as everywhere; at the end no orphan snapshot or clone (`real::check_array`).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::BoxFuture;
use stasis_core::cluster::{Cluster, LocalCluster, Mount, Workload};
use stasis_core::domain::{AppKind, AppSpec, BackupRecord, BackupState, Consistency, ConsistencyPoint, Policy, RestoreMode, Schedule};
use stasis_core::plugin::{AppPlugin, PluginError, RecoveryReport, RecoveryTarget};
use stasis_core::plugins::exec::{ExecHook, ExecHooksConfig, ExecHooksPlugin, OnError};
use stasis_core::workflow::{Orchestrator, WorkflowError};
use tokio::sync::watch;

use super::format::{self, Hooks};
use crate::ledger;
use crate::mariadb::{MariaDbRig, SimWithMounts, SVM};
use crate::torture::spec::{CaseSpec, Op};
use crate::torture::{CaseConfig, CaseResult, CaseRunner};

/// Records a `work` step waits for, per unit of its `commits`.
const WORK_SCALE: u64 = 1;
/// How long the app may take to acknowledge records it was given time for.
const PROGRESS_WAIT_MAX: Duration = Duration::from_secs(10);
/// After a backup the app must acknowledge a new record within this.
pub const RESUME_WAIT_MAX: Duration = Duration::from_secs(3);
/// How long a new clone may take to be mounted.
const MOUNT_WAIT_MAX: Duration = Duration::from_secs(5);
const VOLUME_SIZE: u64 = 1 << 30;
const NAMESPACE: &str = "local";

/// Where `stasis-ledger-app` is: `$STASIS_LEDGER_APP`, or next to the running executable
/// (`target/debug/`), or one directory up (a test binary in `target/debug/deps/`).
pub fn ledger_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("STASIS_LEDGER_APP") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe.parent().context("the executable has no directory")?;
    [dir.to_path_buf(), dir.join("..")]
        .into_iter()
        .map(|d| d.join(ledger::BINARY))
        .find(|p| p.is_file())
        .with_context(|| format!("{} was not found next to {} (build it: cargo build -p stasis-scenarios --bin {}, or set STASIS_LEDGER_APP)", ledger::BINARY, exe.display(), ledger::BINARY))
}

/// The running app: killed (and reaped) on drop, before the volumes are unmounted.
pub struct LedgerProcess {
    child: Child,
    /// The last record the app acknowledged.
    pub acked: watch::Receiver<u64>,
}

impl LedgerProcess {
    fn start(binary: &Path, control: &Path, volumes: &[PathBuf], seed: u64) -> anyhow::Result<LedgerProcess> {
        let mut cmd = Command::new(binary);
        cmd.arg("run").arg("--control").arg(control).arg("--seed").arg(seed.to_string());
        for v in volumes {
            cmd.arg("--volume").arg(v);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, acked) = watch::channel(0u64);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if let Some(n) = line.strip_prefix("ack ").and_then(|n| n.parse().ok()) {
                    tx.send_replace(n);
                }
            }
        });
        let mut process = LedgerProcess { child, acked };
        if ready_rx.recv_timeout(PROGRESS_WAIT_MAX).is_err() {
            let status = process.child.try_wait().ok().flatten();
            anyhow::bail!("{} did not get ready within {PROGRESS_WAIT_MAX:?} (exit status: {status:?})", ledger::BINARY);
        }
        Ok(process)
    }

    pub fn last(&self) -> u64 {
        *self.acked.borrow()
    }

    /// Wait until the app acknowledged record `n`.
    pub async fn wait_for(&self, n: u64, within: Duration) -> anyhow::Result<()> {
        let mut rx = self.acked.clone();
        let waited = tokio::time::timeout(within, async { rx.wait_for(|last| *last >= n).await.map(|_| ()) }).await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => anyhow::bail!("the app exited before acknowledging record {n}"),
            Err(_) => anyhow::bail!("the app acknowledged no record past {} within {within:?} (waiting for {n})", self.last()),
        }
    }
}

impl Drop for LedgerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The app as the orchestrator sees it: frozen and thawed by the scenario's hooks (core's
/// `ExecHooksPlugin`), opened after a restore by the harness's checker.
pub struct LedgerPlugin {
    hooks: ExecHooksPlugin,
    sim: Arc<SimWithMounts>,
    seed: u64,
}

fn mounted(path: &Path) -> bool {
    let want = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().any(|l| l.split(' ').nth(4) == Some(&*want))
}

#[async_trait::async_trait]
impl AppPlugin for LedgerPlugin {
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        self.hooks.quiesce().await
    }
    async fn unquiesce(&self) -> Result<(), PluginError> {
        self.hooks.unquiesce().await
    }
    async fn stop(&self) -> Result<(), PluginError> {
        Err(PluginError::App("the ledger app is restored to clones only in this build".into()))
    }
    async fn start(&self) -> Result<(), PluginError> {
        Err(PluginError::App("the ledger app is restored to clones only in this build".into()))
    }

    /// Open the copy: wait for its mounts, then check it record by record.
    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        let mut dirs = Vec::new();
        for v in &target.volumes {
            let junction = v.junction_path.as_deref().ok_or_else(|| PluginError::App(format!("restored volume {} has no junction path", v.name)))?;
            let dir = self.sim.mounts().mount_point(junction);
            let deadline = Instant::now() + MOUNT_WAIT_MAX;
            while !mounted(&dir) {
                if Instant::now() >= deadline {
                    return Err(PluginError::App(format!("restored volume {} was not mounted at {} within {MOUNT_WAIT_MAX:?}", v.name, dir.display())));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            dirs.push(dir);
        }
        let seed = self.seed;
        let checked = tokio::task::spawn_blocking(move || ledger::check_copy(&dirs.iter().map(PathBuf::as_path).collect::<Vec<_>>(), seed)).await.map_err(|e| PluginError::App(format!("the checker panicked: {e}")))?;
        let k = checked.map_err(PluginError::Verification)?;
        Ok(RecoveryReport { needed_crash_recovery: false, recovered_point: ConsistencyPoint(ledger::point(k)), detail: format!("{k} complete records on {} volume(s)", target.volumes.len()) })
    }
}

fn exec_hooks(hooks: &[format::Hook]) -> Vec<ExecHook> {
    hooks
        .iter()
        .map(|h| ExecHook { argv: h.argv.clone(), timeout: Duration::from_millis(h.timeout_ms), on_error: if h.on_error == format::OnError::Continue { OnError::Continue } else { OnError::Fail } })
        .collect()
}

/// The ledger app on FUSE-mounted simulated volumes, with the orchestrator and the plugin
/// wired as production wires them. Field order is drop order: the app stops, then the
/// volumes are unmounted.
pub struct LedgerRig {
    pub process: LedgerProcess,
    pub plugin: Arc<LedgerPlugin>,
    pub orchestrator: Orchestrator,
    pub app: AppSpec,
    pub sim: Arc<SimWithMounts>,
    pub control: PathBuf,
    _control_dir: tempfile::TempDir,
}

impl LedgerRig {
    pub async fn start(name: &str, volumes: &[String], hooks: &Hooks, seed: u64, freeze_timeout: Duration, client_timeout: Duration) -> anyhow::Result<LedgerRig> {
        let binary = ledger_binary()?;
        let sim = Arc::new(SimWithMounts::start(seed, crate::mariadb::SIM_PASSWORD).await?);
        let mut dirs = Vec::new();
        for v in volumes {
            dirs.push(sim.create_volume(v, VOLUME_SIZE).await?.1);
        }
        let control_dir = tempfile::Builder::new().prefix("stasis-ledger-").tempdir()?;
        let control = control_dir.path().join("control.sock");
        let process = LedgerProcess::start(&binary, &control, &dirs, seed)?;
        // The hooks run "in the app's container": its control socket in the environment,
        // its tools first on PATH.
        let bin_dir = binary.parent().context("the app binary has no directory")?;
        let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())))?;
        let workload = Workload { namespace: NAMESPACE.into(), name: name.into(), kind: AppKind::ExecHooks, mounts: volumes.iter().map(|v| Mount { path: format!("/{v}"), svm: SVM.into(), volume: v.clone() }).collect() };
        let cluster: Arc<dyn Cluster> = Arc::new(LocalCluster::new(vec![workload]).with_env(ledger::CONTROL_ENV, control.to_string_lossy()).with_env("PATH", path.to_string_lossy()));
        let config = ExecHooksConfig { namespace: NAMESPACE.into(), workload: name.into(), pre_snapshot: exec_hooks(&hooks.pre_snapshot), post_snapshot: exec_hooks(&hooks.post_snapshot), ..Default::default() };
        let hooks = ExecHooksPlugin::new(cluster, config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let plugin = Arc::new(LedgerPlugin { hooks, sim: sim.clone(), seed });
        let orchestrator = MariaDbRig::orchestrator(&sim, client_timeout, seed)?;
        let app = AppSpec { name: name.into(), kind: AppKind::ExecHooks, svm: SVM.into(), volumes: volumes.to_vec(), freeze_timeout };
        Ok(LedgerRig { process, plugin, orchestrator, app, sim, control, _control_dir: control_dir })
    }

    pub fn plugin_dyn(&self) -> Arc<dyn AppPlugin> {
        self.plugin.clone()
    }

    /// An error unless the app acknowledges a new record soon (it is not left paused).
    pub async fn check_writing(&self) -> anyhow::Result<()> {
        self.process.wait_for(self.process.last() + 1, RESUME_WAIT_MAX).await.context("the app is not writing after the backup (left paused?)")
    }
}

/// Runs scenario cases of kind exec-hooks.
pub struct ExecRunner {
    pub app: format::App,
}

impl CaseRunner for ExecRunner {
    fn run<'a>(&'a self, spec: &'a CaseSpec, cfg: CaseConfig) -> BoxFuture<'a, CaseResult> {
        Box::pin(run_case(&self.app, spec, cfg))
    }
}

struct ExecCase {
    cfg: CaseConfig,
    rig: LedgerRig,
    /// Backups this case took, with the last record acknowledged before each started.
    taken: std::collections::HashMap<String, (BackupRecord, u64)>,
    result: CaseResult,
}

/// A backup failed because a hook did (the app refused or did not answer in time): the
/// outcome hook failures are meant to have, not a fault of the orchestrator.
fn hook_failure(e: &WorkflowError) -> bool {
    matches!(e, WorkflowError::Plugin(PluginError::App(m)) if m.contains(" hook "))
}

impl ExecCase {
    fn violation(&mut self, message: String) {
        tracing::warn!(%message, "violation");
        self.result.violations.push(message);
    }

    fn live_backups(&self) -> Vec<BackupRecord> {
        self.rig.orchestrator.catalog.backups(Some(&self.rig.app.name)).unwrap_or_default().into_iter().filter(|b| b.state == BackupState::Complete && !b.expired).collect()
    }

    async fn run_op(&mut self, op: &Op) {
        match op {
            Op::Work { commits, .. } => {
                let target = self.rig.process.last() + u64::from(*commits).max(1) * WORK_SCALE;
                if let Err(e) = self.rig.process.wait_for(target, PROGRESS_WAIT_MAX).await {
                    self.violation(format!("work: {e:#}"));
                }
            }
            Op::Backup { .. } => self.backup().await,
            Op::RestoreClone { backup, .. } => self.restore(*backup).await,
            Op::RestoreInPlace { .. } => self.violation("in-place restores of kind exec-hooks are not supported in this build".into()),
            Op::Retention { keep_last, .. } => {
                let policy = Policy { name: "scenario".into(), schedule: Schedule::Interval { every: Duration::from_secs(60) }, keep_last: Some(u32::from(*keep_last)), max_age: None };
                if let Err(e) = self.rig.orchestrator.apply_retention(&self.rig.app, &policy).await {
                    self.violation(format!("retention failed with no fault armed: {e}"));
                }
            }
        }
    }

    async fn backup(&mut self) {
        self.result.backups += 1;
        let acked_before = self.rig.process.last();
        let outcome = self.rig.orchestrator.backup(&self.rig.app, self.rig.plugin_dyn()).await;
        if let Err(e) = self.rig.check_writing().await {
            self.result.freeze_bound_breaches += 1;
            self.violation(format!("{e:#}"));
        }
        let record = match outcome {
            Ok(o) => o.record,
            Err(e) if hook_failure(&e) => {
                tracing::info!(error = %e, "the backup failed on a hook, as hooks may");
                return;
            }
            Err(e) => return self.violation(format!("a backup failed with no fault armed and no hook failing: {e}")),
        };
        self.result.backups_complete += 1;
        if let Some(window) = record.evidence.freeze_window() {
            self.result.freeze_windows_ms.push(window.as_secs_f64() * 1000.0);
            if window > self.cfg.freeze_timeout {
                self.result.freeze_bound_breaches += 1;
                self.violation(format!("backup {} froze the app for {window:?} (bound {:?})", record.id, self.cfg.freeze_timeout));
            }
        }
        self.taken.insert(record.id.clone(), (record, acked_before));
    }

    async fn restore(&mut self, which: u8) {
        let live: Vec<BackupRecord> = self.live_backups().into_iter().filter(|b| b.consistency == Some(Consistency::Application) && self.taken.contains_key(&b.id)).collect();
        if live.is_empty() {
            return;
        }
        let backup = live[which as usize % live.len()].clone();
        let acked_before = self.taken[&backup.id].1;
        self.result.restores += 1;
        match self.rig.orchestrator.restore_to_clone(&self.rig.app, &backup.id, self.rig.plugin_dyn()).await {
            Err(WorkflowError::Plugin(PluginError::Verification(why))) => {
                self.result.inconsistent_restores += 1;
                self.violation(format!("backup {} (point {:?}) restored to a clone: {why}", backup.id, backup.evidence.consistency_point.as_ref().map(|p| p.0.as_str())));
            }
            Err(e) => self.violation(format!("restoring backup {} to a clone failed with no fault armed: {e}", backup.id)),
            Ok(record) => {
                let k = record.recovered_point.as_ref().and_then(|p| ledger::record_of(&p.0)).unwrap_or(0);
                if k < acked_before {
                    self.result.inconsistent_restores += 1;
                    self.violation(format!("backup {} restored to a clone holds records 1..={k}, but record {acked_before} was acknowledged before the backup started", backup.id));
                }
                if let RestoreMode::Clone { .. } = record.mode {
                    if let Err(e) = self.rig.orchestrator.delete_clone_restore(&record.id).await {
                        self.violation(format!("deleting the clones of restore {}: {e}", record.id));
                    }
                }
            }
        }
    }
}

/// Run one case on a fresh app and simulator, and check it.
pub async fn run_case(app: &format::App, spec: &CaseSpec, cfg: CaseConfig) -> CaseResult {
    let hooks = app.hooks.clone().unwrap_or_default();
    let rig = match LedgerRig::start(&app.name, &app.volumes, &hooks, spec.seed, cfg.freeze_timeout, cfg.client_timeout).await {
        Ok(r) => r,
        Err(e) => return CaseResult { violations: vec![format!("the case could not be set up: {e:#}")], ..Default::default() },
    };
    let mut case = ExecCase { cfg, rig, taken: Default::default(), result: CaseResult::default() };
    for op in &spec.ops {
        case.run_op(op).await;
    }
    super::real::check_array(&case.rig.orchestrator, &case.rig.app, &case.rig.sim, &mut case.result);
    case.result
}
