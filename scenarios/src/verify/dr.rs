//! Scenarios with a `failover` step: unplanned DR cases on two simulated clusters
//! (`torture::dr`: site A with the app, SnapMirror to site B, link faults on the updates, a
//! disaster at a random point, failover to B). The scenario fixes the shape (one or two
//! volumes, how many replicated backups before the disaster); the disaster kind, the work and
//! the link faults are drawn from each case's seed. The DR checker's findings become the
//! report a scenario is judged on: B not started at exactly a complete backup's state counts
//! as an inconsistent restore, B started from an older backup than had reached it too.

use std::collections::BTreeMap;
use std::time::Instant;

use super::format::{Scenario, Step};
use crate::torture::dr::{run_dr_case_shaped, DrMutant, DrShape};
use crate::torture::spec;
use crate::torture::{FailingCase, Percentiles, TortureReport};

/// Why this build cannot run a scenario with a failover, if it cannot.
pub fn unsupported(s: &Scenario) -> Option<String> {
    let steps: Vec<&Step> = s.steps().collect();
    if steps.iter().filter(|st| matches!(st, Step::Failover { .. })).count() != 1 || !matches!(steps.last(), Some(Step::Failover { .. })) {
        return Some("step failover: the harness runs one unplanned failover, as the last step (site A is lost for good)".into());
    }
    if let Some(other) = steps.iter().find(|st| !matches!(st, Step::Work { .. } | Step::Backup | Step::Failover { .. })) {
        return Some(format!("step {}: DR cases run work, backups (each replicated to site B) and the failover only", other.name()));
    }
    if s.faults.is_some() {
        return Some("faults: DR cases inject their own (link cuts and slow transfers on the updates, the disaster itself); a faults section is not applied to them".into());
    }
    if s.app.existing_snapshots > 0 || s.mode != super::format::Mode::App {
        return Some("DR cases run in app mode without foreign snapshots".into());
    }
    None
}

pub fn shape(s: &Scenario) -> DrShape {
    DrShape { two_volumes: s.app.volumes.len() == 2, backups: s.steps().filter(|st| matches!(st, Step::Backup)).count() }
}

/// Run the DR cases of a scenario: `cases` from `seed` (or the single case `case_seed`),
/// `parallel` at a time, with a broken system (`mutant`) for negative controls.
pub async fn run(s: &Scenario, cases: u64, seed: u64, case_seed: Option<u64>, parallel: usize, mutant: Option<DrMutant>, mut progress: impl FnMut(u64, u64)) -> TortureReport {
    let started = Instant::now();
    let shape = shape(s);
    let seeds: Vec<u64> = match case_seed {
        Some(one) => vec![one],
        None => (0..cases).map(|i| spec::case_seed(seed, i)).collect(),
    };
    let mut report = TortureReport {
        mode: "app".into(),
        seed: case_seed.unwrap_or(seed),
        cases: 0,
        backups: 0,
        backups_complete: 0,
        restores: 0,
        faults: BTreeMap::new(),
        inconsistent_restores: 0,
        freeze_bound_breaches: 0,
        orphans: 0,
        duplicate_snapshots: 0,
        secret_leaks: 0,
        other_violations: 0,
        freeze_window_ms: Percentiles { p50: 0.0, p99: 0.0, max: 0.0 },
        rpo_transactions_max: 0,
        first_failing_seed: None,
        failing_cases: Vec::new(),
        seconds: 0.0,
        cases_per_minute: 0.0,
    };
    let total = seeds.len() as u64;
    for batch in seeds.chunks(parallel.max(1)) {
        let results = futures::future::join_all(batch.iter().map(|seed| run_dr_case_shaped(*seed, Some(shape), mutant))).await;
        for (case_seed, r) in batch.iter().zip(results) {
            report.cases += 1;
            report.backups += r.backups;
            report.backups_complete += r.backups;
            report.restores += r.failovers;
            // The link faults and the disaster, per kind, as the faults that hit.
            *report.faults.entry("link_cut_update".into()).or_insert(0) += r.updates_failed;
            if let Some(d) = r.disaster {
                let name = serde_json::to_value(d).ok().and_then(|v| v.as_str().map(|n| format!("disaster_{n}"))).unwrap_or_default();
                *report.faults.entry(name).or_insert(0) += 1;
            }
            report.inconsistent_restores += r.torn_or_inexact + r.needless_loss;
            let counted = (r.torn_or_inexact + r.needless_loss) as usize;
            report.other_violations += r.violations.len().saturating_sub(counted) as u64;
            report.rpo_transactions_max = report.rpo_transactions_max.max(r.rpo_transactions.unwrap_or(0));
            if !r.violations.is_empty() {
                report.first_failing_seed.get_or_insert(*case_seed);
                if report.failing_cases.len() < 3 {
                    report.failing_cases.push(FailingCase { case_seed: *case_seed, violations: r.violations.clone(), shrunk: None, reproduce: format!("--case-seed {case_seed}") });
                }
            }
            progress(report.cases, total);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.cases_per_minute = report.cases as f64 * 60.0 / report.seconds.max(1e-9);
    report
}
