//! The `DrPlan` reconciler: status only. The app's volumes (by discovery) are matched to
//! the SnapMirror relationships on the destination cluster (where ONTAP keeps them), read
//! through the `Replication` seam; the last failover's RPO and RTO come from the catalog.
//! Setting relationships up and failing over stay explicit commands (`stasis dr ...`).

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use stasis_core::replication::VolumePath;

use super::{patch_status, ready, rfc3339, Context, OpResult, OperatorError};
use crate::crd::{DrPlan, DrPlanStatus, FailoverSummary, RelationshipStatus};

fn snake(value: impl serde::Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

pub async fn reconcile(plan: Arc<DrPlan>, ctx: Arc<Context>) -> OpResult<Action> {
    let name = plan.name_any();
    let namespace = plan.namespace().ok_or_else(|| OperatorError::Invalid("DrPlan without a namespace".into()))?;
    let api: Api<DrPlan> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = plan.metadata.generation;
    let previous = plan.status.clone().unwrap_or_default();
    let now = ctx.now_rfc3339();
    let refresh = Action::requeue(ctx.config.drplan_refresh);

    let mut status = DrPlanStatus { observed_generation: generation, ..Default::default() };
    let Some(replication) = ctx.replication.get(&plan.spec.destination.cluster) else {
        let known: Vec<&str> = ctx.replication.keys().map(String::as_str).collect();
        let why = format!("no ONTAP cluster named {:?} is configured (known: {})", plan.spec.destination.cluster, known.join(", "));
        status.conditions = ready(&previous.conditions, false, "UnknownCluster", why, &now, generation);
        if status != previous {
            patch_status(&api, &name, None, &status).await?;
        }
        return Ok(Action::await_change());
    };
    let (_, app) = match ctx.resolve_app(&plan.spec.app, &namespace, None).await {
        Ok(found) => found,
        Err(e) => {
            status.conditions = ready(&previous.conditions, false, "AppNotFound", e, &now, generation);
            if status != previous {
                patch_status(&api, &name, None, &status).await?;
            }
            return Ok(refresh);
        }
    };
    let relationships = replication.relationships(&plan.spec.destination.svm).await?;
    let mut missing = Vec::new();
    for volume in &app.volumes {
        let source = VolumePath::new(app.svm.clone(), volume.clone());
        match relationships.iter().find(|r| r.source == source) {
            Some(r) => status.relationships.push(RelationshipStatus {
                source: source.to_string(),
                destination: r.destination.to_string(),
                state: r.state.as_ontap().to_string(),
                healthy: r.healthy,
                lag_seconds: r.lag_time.map(|d| d.as_secs()),
                unhealthy_reason: r.unhealthy_reason.clone(),
            }),
            None => missing.push(source.to_string()),
        }
    }
    let states: std::collections::BTreeSet<&str> = status.relationships.iter().map(|r| r.state.as_str()).collect();
    status.relationship_state = Some(match (states.len(), missing.is_empty()) {
        (0, _) => "none".to_string(),
        (1, true) => states.iter().next().unwrap().to_string(),
        _ => "mixed".to_string(),
    });
    status.healthy = Some(missing.is_empty() && status.relationships.iter().all(|r| r.healthy != Some(false)));
    status.lag_seconds = status.relationships.iter().filter_map(|r| r.lag_seconds).max();
    if let Some(catalog) = &ctx.catalog {
        let failovers = catalog.failovers(Some(&app.name)).map_err(|e| OperatorError::Invalid(format!("reading failovers of {}: {e}", app.name)))?;
        status.last_failover = failovers.last().map(|f| FailoverSummary {
            kind: snake(f.kind),
            state: snake(f.state),
            started_at: rfc3339(f.started_at),
            rpo_seconds: f.rpo.map(|d| d.as_secs_f64()),
            rto_seconds: f.rto.map(|d| d.as_secs_f64()),
        });
    }
    status.conditions = if missing.is_empty() {
        let state = status.relationship_state.clone().unwrap_or_default();
        ready(&previous.conditions, status.healthy == Some(true), if status.healthy == Some(true) { "Replicating" } else { "Unhealthy" }, format!("{} relationship(s), {state}", status.relationships.len()), &now, generation)
    } else {
        ready(&previous.conditions, false, "NotReplicated", format!("no SnapMirror relationship on {} for {}", plan.spec.destination.cluster, missing.join(", ")), &now, generation)
    };
    if status != previous {
        patch_status(&api, &name, None, &status).await?;
    }
    Ok(refresh)
}
