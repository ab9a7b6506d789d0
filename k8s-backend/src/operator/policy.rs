//! The `BackupPolicy` reconciler: create the due `Backup` objects, apply retention.
//!
//! A Backup's name is derived from the policy, the app and the *due* time, so a new leader
//! that re-runs a pass its predecessor half-finished gets 409 AlreadyExists, not a second
//! backup. Retention deletes Backup objects; their finalizer deletes the snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use stasis_core::domain::{BackupRecord, BackupState, Evidence, Policy};
use stasis_core::workflow::{next_due, select_expired};

use super::{patch_status, ready, rfc3339, Context, OpResult, OperatorError};
use crate::crd::{self, AppRef, Backup, BackupPolicy, BackupPolicyStatus, BackupSpec, Phase};
use crate::error::Context as _;

pub const POLICY_LABEL: &str = "stasis.io/policy";
/// `<namespace>.<name>` of the app (a label value: both are DNS labels, 63 chars at most).
pub const APP_LABEL: &str = "stasis.io/app";

fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc))
}

/// `<policy>-<app>-<yyyymmddhhmm>`, cut to fit a name (253) and kept a DNS subdomain.
pub fn backup_name(policy: &str, app: &str, due: DateTime<Utc>) -> String {
    let stamp = due.format("%Y%m%d%H%M").to_string();
    let mut base: String = format!("{policy}-{app}").to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' }).collect();
    base.truncate(253 - stamp.len() - 1);
    format!("{}-{stamp}", base.trim_end_matches(['-', '.']))
}

async fn selected_apps(policy: &BackupPolicy, ctx: &Context) -> OpResult<Vec<(String, String)>> {
    let namespace = policy.namespace().unwrap_or_default();
    let mut apps = BTreeSet::new();
    for app in &policy.spec.selector.apps {
        apps.insert(app.qualified(&namespace));
    }
    for ns in &policy.spec.selector.namespaces {
        let found = ctx.cluster.discover(Some(ns)).await.map_err(|e| OperatorError::Invalid(format!("discovering apps in namespace {ns}: {e}")))?;
        apps.extend(found.into_iter().map(|w| (w.namespace, w.name)));
    }
    Ok(apps.into_iter().collect())
}

pub async fn reconcile(policy: Arc<BackupPolicy>, ctx: Arc<Context>) -> OpResult<Action> {
    let name = policy.name_any();
    let namespace = policy.namespace().ok_or_else(|| OperatorError::Invalid("BackupPolicy without a namespace".into()))?;
    let policies: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = policy.metadata.generation;
    let previous = policy.status.clone().unwrap_or_default();
    let now = ctx.clock.now();
    let now_text = rfc3339(now);

    let invalid = |reason: &str, message: String| BackupPolicyStatus {
        conditions: ready(&previous.conditions, false, reason, message, &now_text, generation),
        observed_generation: generation,
        ..previous.clone()
    };
    let schedule = match crd::parse_schedule(&policy.spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            patch_status(&policies, &name, None, &invalid("InvalidSchedule", format!("schedule: {e}"))).await?;
            return Ok(Action::await_change());
        }
    };
    let max_age = match policy.spec.retention.max_age.as_deref().map(crd::parse_duration).transpose() {
        Ok(a) => a,
        Err(e) => {
            patch_status(&policies, &name, None, &invalid("InvalidRetention", format!("retention.maxAge: {e}"))).await?;
            return Ok(Action::await_change());
        }
    };
    if let Some(t) = &policy.spec.freeze_timeout {
        if let Err(e) = crd::parse_duration(t) {
            patch_status(&policies, &name, None, &invalid("InvalidFreezeTimeout", format!("freezeTimeout: {e}"))).await?;
            return Ok(Action::await_change());
        }
    }
    let core_policy = Policy { name: name.clone(), schedule: schedule.clone(), keep_last: policy.spec.retention.keep_last, max_age };
    let apps = selected_apps(&policy, &ctx).await?;

    // Schedule.
    let mut status = previous.clone();
    let last = previous.last_schedule_time.as_deref().and_then(parse_time);
    let due = next_due(&schedule, last, now).map_err(OperatorError::Invalid)?;
    if !policy.spec.suspend && due <= now {
        let mut created = Vec::new();
        for (app_ns, app_name) in &apps {
            let backup_name = backup_name(&name, &format!("{app_ns}-{app_name}"), due);
            let backup = Backup {
                metadata: ObjectMeta {
                    name: Some(backup_name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some(BTreeMap::from([(POLICY_LABEL.to_string(), name.clone()), (APP_LABEL.to_string(), format!("{app_ns}.{app_name}"))])),
                    ..Default::default()
                },
                spec: BackupSpec { app: AppRef { namespace: Some(app_ns.clone()), name: app_name.clone() }, policy: Some(name.clone()), freeze_timeout: policy.spec.freeze_timeout.clone() },
                status: None,
            };
            match backups.create(&PostParams::default(), &backup).await {
                Ok(_) => tracing::info!(policy = %name, backup = %backup_name, "created a scheduled backup"),
                Err(kube::Error::Api(s)) if s.code == 409 => tracing::info!(policy = %name, backup = %backup_name, "the scheduled backup exists already"),
                Err(e) => return Err(crate::K8sError::from_kube(format!("creating Backup {namespace}/{backup_name}"), e).into()),
            }
            created.push(backup_name);
        }
        status.last_schedule_time = Some(now_text.clone());
        status.last_backups = created;
    }

    // Retention, per app, over this policy's succeeded backups.
    let lp = ListParams::default().labels(&format!("{POLICY_LABEL}={name}"));
    let owned = backups.list(&lp).await.ctx(|| format!("listing the Backups of policy {namespace}/{name}"))?.items;
    let mut by_app: BTreeMap<String, Vec<BackupRecord>> = BTreeMap::new();
    for b in &owned {
        let Some(s) = b.status.as_ref().filter(|s| s.phase == Phase::Succeeded) else { continue };
        if b.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let started_at = s.started_at.as_deref().and_then(parse_time).or_else(|| b.metadata.creation_timestamp.as_ref().and_then(|t| parse_time(&t.0.to_string()))).unwrap_or(now);
        by_app.entry(b.labels().get(APP_LABEL).cloned().unwrap_or_default()).or_default().push(BackupRecord {
            id: b.name_any(),
            app: String::new(),
            snapshot_name: String::new(),
            state: BackupState::Complete,
            consistency: None,
            evidence: Evidence::default(),
            snapshots: Vec::new(),
            started_at,
            finished_at: None,
            error: None,
            verified: false,
            expired: false,
        });
    }
    let mut expired = Vec::new();
    for records in by_app.values() {
        let (selected, _) = select_expired(&core_policy, records, now);
        for record in selected {
            match backups.delete(&record.id, &DeleteParams::default()).await {
                Ok(_) => expired.push(record.id.clone()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(crate::K8sError::from_kube(format!("deleting expired Backup {namespace}/{}", record.id), e).into()),
            }
        }
    }
    if !expired.is_empty() {
        tracing::info!(policy = %name, ?expired, "retention deleted backups");
    }
    status.expired = expired;

    let last = status.last_schedule_time.as_deref().and_then(parse_time);
    let next = next_due(&schedule, last, now).map_err(OperatorError::Invalid)?;
    status.next_schedule_time = Some(rfc3339(next));
    let message = if policy.spec.suspend { "suspended: no new backups; retention applies".to_string() } else { format!("{} app(s) selected; next backup at {}", apps.len(), rfc3339(next)) };
    status.conditions = ready(&previous.conditions, true, if policy.spec.suspend { "Suspended" } else { "Scheduled" }, message, &now_text, generation);
    status.observed_generation = generation;
    if status != previous {
        patch_status(&policies, &name, None, &status).await?;
    }
    let wait = (next - now).to_std().unwrap_or_default().clamp(Duration::from_secs(1), ctx.config.policy_requeue_max);
    Ok(Action::requeue(wait))
}
