//! Jobs: each backup or restore started through the API runs as a job whose progress is the
//! workflow's own step boundaries (the orchestrator's `StepHook`), published to subscribers
//! (the dashboard's job monitor over server-sent events).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use stasis_core::workflow::{Crashed, Step, StepHook};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::metrics::{AppLabels, Metrics};

/// Finished jobs kept for the job monitor; older ones are forgotten (the catalog keeps
/// the backups and restores themselves).
pub const JOBS_KEPT_MAX: usize = 500;
/// Updates buffered per subscriber; a slower subscriber skips ahead (it receives the
/// job's latest state with its next update).
const EVENTS_BUFFERED_MAX: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Backup,
    ScheduledBackup,
    RestoreToClone,
    RestoreInPlace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for another workflow of the same app to finish.
    Queued,
    Running,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub app: String,
    pub state: JobState,
    /// The workflow step last passed (e.g. `quiesced`, `snapshot_taken`).
    pub step: Option<String>,
    pub steps_done: u32,
    pub steps_total: u32,
    /// The backup the job made, or the backup it restores.
    pub backup_id: Option<String>,
    pub restore_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// One line for the monitor (consistency point and freeze window, recovered point).
    pub message: Option<String>,
    pub error: Option<String>,
}

pub struct Jobs {
    jobs: Mutex<Vec<Job>>,
    events: broadcast::Sender<Job>,
    next: std::sync::atomic::AtomicU64,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs { jobs: Mutex::new(Vec::new()), events: broadcast::channel(EVENTS_BUFFERED_MAX).0, next: Default::default() }
    }
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn create(&self, kind: JobKind, app: &str, backup_id: Option<String>) -> Job {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let job = Job {
            id: format!("j-{n}-{:06x}", rand::random::<u32>() & 0xff_ffff),
            kind,
            app: app.to_string(),
            state: JobState::Queued,
            step: None,
            steps_done: 0,
            steps_total: match kind {
                JobKind::Backup | JobKind::ScheduledBackup => Step::BACKUP.len() as u32,
                JobKind::RestoreToClone => 4,
                JobKind::RestoreInPlace => Step::RESTORE.len() as u32,
            },
            backup_id,
            restore_id: None,
            started_at: Utc::now(),
            finished_at: None,
            message: None,
            error: None,
        };
        let mut jobs = self.lock();
        jobs.push(job.clone());
        // Forget the oldest finished jobs beyond the bound.
        while jobs.len() > JOBS_KEPT_MAX {
            match jobs.iter().position(|j| matches!(j.state, JobState::Succeeded | JobState::Failed)) {
                Some(i) => {
                    jobs.remove(i);
                }
                None => break,
            }
        }
        drop(jobs);
        let _ = self.events.send(job.clone());
        job
    }

    /// Change a job and publish its new state.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Job)) {
        let updated = {
            let mut jobs = self.lock();
            jobs.iter_mut().find(|j| j.id == id).map(|job| {
                change(job);
                job.clone()
            })
        };
        if let Some(job) = updated {
            let _ = self.events.send(job);
        }
    }

    pub fn list(&self) -> Vec<Job> {
        self.lock().clone()
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.lock().iter().find(|j| j.id == id).cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Job> {
        self.events.subscribe()
    }
}

fn step_name(step: Step) -> String {
    // `SnapshotTaken` -> `snapshot_taken`
    let debug = format!("{step:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The orchestrator's step hook for one job: reports each step boundary as progress and
/// times the snapshot request inside the freeze. Never interrupts the workflow.
pub struct JobProgress {
    pub jobs: Arc<Jobs>,
    pub metrics: Arc<Metrics>,
    pub job_id: String,
    pub app: String,
    quiesced_at: Mutex<Option<Instant>>,
}

impl JobProgress {
    pub fn new(jobs: Arc<Jobs>, metrics: Arc<Metrics>, job_id: &str, app: &str) -> Self {
        JobProgress { jobs, metrics, job_id: job_id.to_string(), app: app.to_string(), quiesced_at: Mutex::new(None) }
    }
}

impl StepHook for JobProgress {
    fn at(&self, step: Step) -> Result<(), Crashed> {
        match step {
            Step::Quiesced => *self.quiesced_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now()),
            Step::SnapshotTaken => {
                if let Some(t) = self.quiesced_at.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    self.metrics.snapshot_latency.get_or_create(&AppLabels { app: self.app.clone() }).observe(t.elapsed().as_secs_f64());
                }
            }
            _ => {}
        }
        // Inside the freeze nothing but the timing above happens: publishing waits for after.
        if step.is_inside_freeze() {
            return Ok(());
        }
        self.jobs.update(&self.job_id, |job| {
            job.step = Some(step_name(step));
            job.steps_done = (job.steps_done + 1).min(job.steps_total);
            if step == Step::Unquiesced {
                // The two steps inside the freeze were passed silently.
                job.steps_done = (job.steps_done + 2).min(job.steps_total);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_are_snake_case() {
        assert_eq!(step_name(Step::SnapshotTaken), "snapshot_taken");
        assert_eq!(step_name(Step::BackupRecorded), "backup_recorded");
    }

    #[test]
    fn finished_jobs_beyond_the_bound_are_forgotten_running_ones_never() {
        let jobs = Jobs::default();
        let running = jobs.create(JobKind::Backup, "a", None);
        for _ in 0..JOBS_KEPT_MAX + 10 {
            let j = jobs.create(JobKind::Backup, "a", None);
            jobs.update(&j.id, |j| j.state = JobState::Succeeded);
        }
        assert!(jobs.list().len() <= JOBS_KEPT_MAX + 1);
        assert!(jobs.get(&running.id).is_some());
    }
}
