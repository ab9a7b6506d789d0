//! The `Restore` reconciler: validate (the Backup exists and succeeded; in place needs
//! `confirm`; a new namespace needs its name), then hand over to the injected
//! [`super::RestoreRunner`]. Without one the Restore fails with condition
//! `RestoreUnavailable`. A Restore runs at most once: a `Running` one found at the start
//! was interrupted and is failed, never restarted (an in-place restore half-done must be
//! looked at by a person).

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{backup, patch_status, ready, Context, OpResult, OperatorError, RestoreRequest};
use crate::crd::{Backup, Phase, Restore, RestoreMode, RestoreStatus};

fn failed(previous: &RestoreStatus, reason: &str, error: String, now: &str, generation: Option<i64>) -> RestoreStatus {
    RestoreStatus {
        phase: Phase::Failed,
        error: Some(error.clone()),
        finished_at: Some(now.to_string()),
        conditions: ready(&previous.conditions, false, reason, error, now, generation),
        observed_generation: generation,
        ..previous.clone()
    }
}

pub async fn reconcile(cached: Arc<Restore>, ctx: Arc<Context>) -> OpResult<Action> {
    if cached.status.as_ref().is_some_and(|s| s.phase.is_final()) {
        return Ok(Action::await_change());
    }
    let name = cached.name_any();
    let namespace = cached.namespace().ok_or_else(|| OperatorError::Invalid("Restore without a namespace".into()))?;
    let api: Api<Restore> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(restore) = api.get_opt(&name).await.map_err(|e| crate::K8sError::from_kube(format!("reading Restore {namespace}/{name}"), e))? else {
        return Ok(Action::await_change());
    };
    let generation = restore.metadata.generation;
    let rv = restore.metadata.resource_version.clone();
    let status = restore.status.clone().unwrap_or_default();
    let now = ctx.now_rfc3339();
    let fail = |reason: &str, error: String| failed(&status, reason, error, &now, generation);
    match status.phase {
        Phase::Succeeded | Phase::Failed => return Ok(Action::await_change()),
        Phase::Running => {
            let why = "interrupted: the operator stopped (or lost leadership) during this restore; check the app and create a new Restore".to_string();
            patch_status(&api, &name, rv.as_deref(), &fail("RestoreInterrupted", why)).await?;
            return Ok(Action::await_change());
        }
        Phase::Pending => {}
    }

    // Validate before anything else; a refusal changes nothing.
    let spec = &restore.spec;
    let target_namespace = match spec.target.mode {
        RestoreMode::InPlace if !spec.confirm => {
            let why = format!("an in-place restore replaces the app's current data and loses every newer backup; set spec.confirm: true to go ahead (Restore {namespace}/{name})");
            patch_status(&api, &name, rv.as_deref(), &fail("ConfirmationRequired", why)).await?;
            return Ok(Action::await_change());
        }
        RestoreMode::InPlace => None,
        RestoreMode::NewNamespace => match spec.target.namespace.as_deref().filter(|n| !n.is_empty()) {
            Some(ns) => Some(ns.to_string()),
            None => {
                patch_status(&api, &name, rv.as_deref(), &fail("InvalidTarget", "target.mode NewNamespace needs target.namespace".into())).await?;
                return Ok(Action::await_change());
            }
        },
    };
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &namespace);
    let source = match backups.get_opt(&spec.backup).await.map_err(|e| crate::K8sError::from_kube(format!("reading Backup {namespace}/{}", spec.backup), e))? {
        Some(b) if b.status.as_ref().is_some_and(|s| s.phase == Phase::Succeeded) => b,
        Some(b) => {
            let phase = b.status.as_ref().map(|s| s.phase).unwrap_or_default();
            patch_status(&api, &name, rv.as_deref(), &fail("BackupNotRestorable", format!("Backup {namespace}/{} is {phase:?}, not Succeeded", spec.backup))).await?;
            return Ok(Action::await_change());
        }
        None => {
            patch_status(&api, &name, rv.as_deref(), &fail("BackupNotFound", format!("Backup {namespace}/{} does not exist", spec.backup))).await?;
            return Ok(Action::await_change());
        }
    };
    let Some(runner) = ctx.restore.clone() else {
        let why = "restore through the operator is not available in this build: nothing was changed (restore with the stasis CLI meanwhile)".to_string();
        patch_status(&api, &name, rv.as_deref(), &fail("RestoreUnavailable", why)).await?;
        return Ok(Action::await_change());
    };
    let (workload, app) = match ctx.resolve_app(&source.spec.app, &namespace, source.spec.freeze_timeout.as_deref()).await {
        Ok(found) => found,
        Err(e) => {
            patch_status(&api, &name, rv.as_deref(), &fail("AppNotFound", e)).await?;
            return Ok(Action::await_change());
        }
    };
    let record = match backup::record_of(&source, &app.name) {
        Ok(r) => r,
        Err(e) => {
            patch_status(&api, &name, rv.as_deref(), &fail("BackupNotRestorable", format!("Backup {namespace}/{}: {e}", spec.backup))).await?;
            return Ok(Action::await_change());
        }
    };
    let running = RestoreStatus {
        phase: Phase::Running,
        target_namespace: target_namespace.clone(),
        started_at: Some(now.clone()),
        conditions: ready(&status.conditions, false, "RestoreRunning", format!("restoring Backup {} of {}", spec.backup, app.name), &now, generation),
        observed_generation: generation,
        ..Default::default()
    };
    let rv = patch_status(&api, &name, rv.as_deref(), &running).await?;
    let request = RestoreRequest { restore_name: name.clone(), namespace: namespace.clone(), workload, app, backup: record, target: spec.target.clone() };
    let now = ctx.now_rfc3339();
    let outcome = runner.restore(request).await;
    let done = match outcome {
        Ok(o) => RestoreStatus {
            phase: Phase::Succeeded,
            restore_id: Some(o.restore_id),
            target_namespace: o.target_namespace.or(target_namespace),
            recovered_point: o.recovered_point,
            finished_at: Some(now.clone()),
            conditions: ready(&running.conditions, true, "RestoreSucceeded", "restored and verified", &now, generation),
            ..running.clone()
        },
        Err(e) => failed(&running, "RestoreFailed", e, &now, generation),
    };
    patch_status(&api, &name, rv.as_deref(), &done).await?;
    Ok(Action::await_change())
}
