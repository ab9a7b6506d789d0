//! Exec hooks: any application, frozen and thawed by commands run in its container (like
//! Trident's execution hooks and Kanister blueprints). The commands go through the
//! [`Cluster`] seam: `kubectl exec`-style in Kubernetes, a local process on one host.
//!
//! Every command is an argument vector, never a shell string: nothing from the app's name,
//! its volumes or the catalog is ever interpreted by a shell. A user who wants a shell
//! writes `["sh", "-c", "<their own script>"]` in their config, with no substitution by us.
//!
//! - `pre_snapshot` hooks run in order before the snapshot. A failing hook with
//!   `on_error: fail` aborts the quiesce; the `post_snapshot` hooks then run at once, so
//!   whatever the earlier hooks froze is thawed. `on_error: continue` logs and goes on.
//! - A hook may print a line `stasis-consistency-point: <text>` on stdout: the last such
//!   line of the pre-snapshot hooks is the backup's consistency point (e.g. a log
//!   position). Without one the point is the time of the freeze.
//! - A pre-snapshot hook that fails under `on_error: continue` lets the backup go on, but
//!   every thaw of that quiesce reports it: the workflow records it as the evidence's
//!   `thaw_error` and keeps the backup as crash-consistent (nothing proves the freeze).
//! - `post_snapshot` hooks run once per quiesce (the freeze watchdog and the workflow may
//!   both thaw), all of them even if one fails.
//! - `post_restore` hooks open the restored app and may print its recovered point the same
//!   way; `{volume}` in an argument becomes each restored volume's name, one argument each.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use crate::cluster::Cluster;
use crate::domain::ConsistencyPoint;
use crate::plugin::{AppPlugin, PluginError, RecoveryReport, RecoveryTarget};

/// The stdout line a hook prints to report a consistency point.
pub const POINT_PREFIX: &str = "stasis-consistency-point:";
/// Default bound on one hook.
pub const HOOK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// The operation fails (a pre-snapshot failure aborts the backup).
    #[default]
    Fail,
    /// Log it and go on.
    Continue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecHook {
    pub argv: Vec<String>,
    pub timeout: Duration,
    pub on_error: OnError,
}

impl ExecHook {
    pub fn new(argv: &[&str]) -> Self {
        ExecHook { argv: argv.iter().map(|s| s.to_string()).collect(), timeout: HOOK_TIMEOUT_DEFAULT, on_error: OnError::Fail }
    }
}

/// Which workload the hooks run in, and the hooks.
#[derive(Debug, Clone, Default)]
pub struct ExecHooksConfig {
    pub namespace: String,
    pub workload: String,
    pub pre_snapshot: Vec<ExecHook>,
    pub post_snapshot: Vec<ExecHook>,
    /// Stop the app before an in-place restore; start it after.
    pub stop: Vec<ExecHook>,
    pub start: Vec<ExecHook>,
    pub post_restore: Vec<ExecHook>,
}

pub struct ExecHooksPlugin {
    cluster: Arc<dyn Cluster>,
    config: ExecHooksConfig,
    /// Pre-snapshot hooks ran and the post-snapshot hooks have not yet: only then does a
    /// thaw run them.
    frozen: tokio::sync::Mutex<bool>,
    /// A pre-snapshot hook of the last quiesce failed under `on_error: continue`: the
    /// freeze is not proven, so every thaw of that quiesce reports it (the backup is then
    /// kept as crash-consistent, with this reason in its evidence).
    unproven: std::sync::Mutex<Option<String>>,
}

/// What one hook did.
struct Ran {
    point: Option<String>,
}

fn point_in(stdout: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stdout).lines().filter_map(|l| l.strip_prefix(POINT_PREFIX)).map(|p| p.trim().to_string()).rfind(|p| !p.is_empty())
}

impl ExecHooksPlugin {
    pub fn new(cluster: Arc<dyn Cluster>, config: ExecHooksConfig) -> Result<Self, PluginError> {
        let all = [&config.pre_snapshot, &config.post_snapshot, &config.stop, &config.start, &config.post_restore];
        if all.iter().flat_map(|hooks| hooks.iter()).any(|h| h.argv.first().is_none_or(|p| p.is_empty())) {
            return Err(PluginError::App("exec hooks: every hook needs a program (argv[0])".into()));
        }
        if config.pre_snapshot.is_empty() && config.post_snapshot.is_empty() {
            return Err(PluginError::App("exec hooks: no pre_snapshot or post_snapshot hook configured".into()));
        }
        Ok(ExecHooksPlugin { cluster, config, frozen: tokio::sync::Mutex::new(false), unproven: std::sync::Mutex::new(None) })
    }

    /// Run one hook; `Err` only when it failed and its policy is `fail`.
    async fn run(&self, phase: &str, hook: &ExecHook, argv: &[String]) -> Result<Ran, PluginError> {
        let outcome = self.cluster.exec(&self.config.namespace, &self.config.workload, argv, hook.timeout).await;
        let failure = match outcome {
            Ok(out) if out.status == 0 => return Ok(Ran { point: point_in(&out.stdout) }),
            Ok(out) => format!("exited with status {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
            Err(e) => e.to_string(),
        };
        let message = format!("{phase} hook {:?} {failure}", hook.argv[0]);
        match hook.on_error {
            OnError::Fail => Err(PluginError::App(message)),
            OnError::Continue => {
                tracing::warn!(%message, "hook failed; continuing as configured");
                if phase == "pre-snapshot" {
                    self.unproven.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(message);
                }
                Ok(Ran { point: None })
            }
        }
    }

    /// Run hooks in order, stopping at the first that fails with policy `fail`.
    async fn run_all(&self, phase: &str, hooks: &[ExecHook]) -> Result<Option<String>, PluginError> {
        let mut point = None;
        for hook in hooks {
            if let Some(p) = self.run(phase, hook, &hook.argv).await?.point {
                point = Some(p);
            }
        }
        Ok(point)
    }

    /// Run every post-snapshot hook, even after a failure; report the first failure.
    async fn thaw(&self) -> Result<(), PluginError> {
        let mut first = None;
        for hook in &self.config.post_snapshot {
            if let Err(e) = self.run("post-snapshot", hook, &hook.argv).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// `{volume}` in an argument stands for each volume name in turn (one argument each).
fn expand(argv: &[String], volumes: &[String]) -> Vec<String> {
    argv.iter().flat_map(|arg| if arg.contains("{volume}") { volumes.iter().map(|v| arg.replace("{volume}", v)).collect() } else { vec![arg.clone()] }).collect()
}

#[async_trait]
impl AppPlugin for ExecHooksPlugin {
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        let mut frozen = self.frozen.lock().await;
        *frozen = true;
        *self.unproven.lock().unwrap_or_else(|p| p.into_inner()) = None;
        match self.run_all("pre-snapshot", &self.config.pre_snapshot).await {
            Ok(point) => Ok(ConsistencyPoint(point.unwrap_or_else(|| format!("exec-hooks@{}", Utc::now().to_rfc3339())))),
            Err(e) => {
                // Undo what the hooks before the failing one froze.
                *frozen = false;
                if let Err(thaw) = self.thaw().await {
                    tracing::warn!(error = %thaw, "thawing after a failed pre-snapshot hook");
                }
                Err(e)
            }
        }
    }

    async fn unquiesce(&self) -> Result<(), PluginError> {
        let mut frozen = self.frozen.lock().await;
        let thawed = if std::mem::replace(&mut *frozen, false) { self.thaw().await } else { Ok(()) };
        thawed?;
        match self.unproven.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(why) => Err(PluginError::App(format!("the freeze is not proven: {why} (on_error: continue)"))),
            None => Ok(()),
        }
    }

    async fn stop(&self) -> Result<(), PluginError> {
        if self.config.stop.is_empty() {
            return Err(PluginError::App("exec hooks: no stop hook configured, so the app cannot be stopped for an in-place restore".into()));
        }
        self.run_all("stop", &self.config.stop).await.map(|_| ())
    }

    async fn start(&self) -> Result<(), PluginError> {
        if self.config.start.is_empty() {
            return Err(PluginError::App("exec hooks: no start hook configured".into()));
        }
        self.run_all("start", &self.config.start).await.map(|_| ())
    }

    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        let volumes: Vec<String> = target.volumes.iter().map(|v| v.name.clone()).collect();
        let mut point = None;
        for hook in &self.config.post_restore {
            if let Some(p) = self.run("post-restore", hook, &expand(&hook.argv, &volumes)).await?.point {
                point = Some(p);
            }
        }
        let point = point.ok_or_else(|| PluginError::Verification(format!("exec hooks: no post_restore hook reported the recovered point (a line `{POINT_PREFIX} <point>` on stdout)")))?;
        Ok(RecoveryReport { needed_crash_recovery: false, recovered_point: ConsistencyPoint(point), detail: format!("{} post-restore hook(s) ran on {}", self.config.post_restore.len(), volumes.join(", ")) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{LocalCluster, Mount, Workload};
    use crate::domain::AppKind;

    fn cluster() -> Arc<dyn Cluster> {
        Arc::new(LocalCluster::new(vec![Workload { namespace: "ns".into(), name: "app".into(), kind: AppKind::ExecHooks, mounts: vec![Mount { path: "/data".into(), svm: "svm0".into(), volume: "v".into() }] }]))
    }

    fn plugin(pre: Vec<ExecHook>, post: Vec<ExecHook>) -> ExecHooksPlugin {
        ExecHooksPlugin::new(cluster(), ExecHooksConfig { namespace: "ns".into(), workload: "app".into(), pre_snapshot: pre, post_snapshot: post, ..Default::default() }).unwrap()
    }

    /// A hook that appends `word` to `log` (an argument vector: the path is one argument).
    fn record(log: &std::path::Path, word: &str) -> ExecHook {
        ExecHook::new(&["sh", "-c", "echo \"$1\" >> \"$2\"", "hook", word, log.to_str().unwrap()])
    }

    fn lines(log: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect()
    }

    #[tokio::test]
    async fn hooks_run_in_order_and_thaw_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let p = plugin(vec![record(&log, "freeze1"), record(&log, "freeze2")], vec![record(&log, "thaw")]);
        let point = p.quiesce().await.unwrap();
        assert!(point.0.starts_with("exec-hooks@"), "{point}");
        p.unquiesce().await.unwrap();
        p.unquiesce().await.unwrap();
        assert_eq!(lines(&log), ["freeze1", "freeze2", "thaw"], "post-snapshot hooks run once per quiesce");
    }

    #[tokio::test]
    async fn a_failing_pre_hook_with_fail_aborts_and_thaws_what_was_frozen() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let p = plugin(vec![record(&log, "freeze1"), ExecHook::new(&["false"]), record(&log, "never")], vec![record(&log, "thaw")]);
        let err = p.quiesce().await.unwrap_err();
        assert!(err.to_string().contains("pre-snapshot hook \"false\" exited with status 1"), "{err}");
        assert_eq!(lines(&log), ["freeze1", "thaw"]);
        p.unquiesce().await.unwrap();
        assert_eq!(lines(&log), ["freeze1", "thaw"], "no second thaw");
    }

    #[tokio::test]
    async fn continue_policy_goes_on_and_timeouts_are_failures() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut failing = ExecHook::new(&["false"]);
        failing.on_error = OnError::Continue;
        let p = plugin(vec![failing, record(&log, "freeze")], vec![record(&log, "thaw")]);
        p.quiesce().await.unwrap();
        let unproven = p.unquiesce().await.unwrap_err();
        assert!(unproven.to_string().contains("the freeze is not proven: pre-snapshot hook \"false\""), "{unproven}");
        assert_eq!(lines(&log), ["freeze", "thaw"]);
        assert!(p.unquiesce().await.is_err(), "a second thaw (the watchdog's) reports it too");
        assert_eq!(lines(&log), ["freeze", "thaw"], "but runs no hook twice");

        let mut slow = ExecHook::new(&["sleep", "10"]);
        slow.timeout = Duration::from_millis(100);
        let p = plugin(vec![slow], vec![record(&log, "thaw2")]);
        let started = std::time::Instant::now();
        let err = p.quiesce().await.unwrap_err();
        assert!(err.to_string().contains("did not finish within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(lines(&log).last().unwrap(), "thaw2");
    }

    #[tokio::test]
    async fn a_hook_reports_the_consistency_point_and_names_stay_arguments() {
        let hostile = "$(touch /tmp/stasis-hook-should-not-exist); `id`";
        let p = plugin(vec![ExecHook::new(&["echo", &format!("{POINT_PREFIX} {hostile}")])], vec![ExecHook::new(&["true"])]);
        let point = p.quiesce().await.unwrap();
        assert_eq!(point.0, hostile, "the argument arrives verbatim, unexpanded");
        assert!(!std::path::Path::new("/tmp/stasis-hook-should-not-exist").exists());
        p.unquiesce().await.unwrap();
    }

    #[tokio::test]
    async fn recovery_needs_a_post_restore_hook_that_reports_the_point() {
        let volumes = vec![crate::storage::VolumeInfo {
            uuid: "u1".into(),
            name: "data_clone".into(),
            svm: "svm0".into(),
            online: true,
            writable: true,
            n_snapshots: 0,
            size_bytes: 0,
            used_bytes: 0,
            junction_path: None,
            clone_parent_uuid: None,
        }];
        let target = RecoveryTarget { volumes, in_place: false };
        let p = plugin(vec![ExecHook::new(&["true"])], vec![]);
        assert!(matches!(p.recover(&target).await, Err(PluginError::Verification(_))));
        let p = ExecHooksPlugin::new(
            cluster(),
            ExecHooksConfig {
                namespace: "ns".into(),
                workload: "app".into(),
                pre_snapshot: vec![ExecHook::new(&["true"])],
                post_restore: vec![ExecHook::new(&["echo", "stasis-consistency-point: opened {volume}"])],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.recover(&target).await.unwrap().recovered_point.0, "opened data_clone");
        assert!(p.stop().await.is_err(), "no stop hook: an in-place restore is refused");
    }

    #[test]
    fn empty_programs_are_refused() {
        assert!(ExecHooksPlugin::new(cluster(), ExecHooksConfig { pre_snapshot: vec![ExecHook { argv: vec![], timeout: HOOK_TIMEOUT_DEFAULT, on_error: OnError::Fail }], ..Default::default() }).is_err());
        assert!(ExecHooksPlugin::new(cluster(), ExecHooksConfig::default()).is_err());
    }
}
