//! DR cases of the harness: unplanned failovers at random points (idle, mid-transfer with the
//! link cut, mid-transfer in flight, link down then site down) over two simulators; site B
//! must start at exactly a complete app-consistent backup's state, the newest that reached
//! it, with RPO within the backup interval plus one transfer. And the checker catches a
//! system that restores an older backup or a state that is not the backup's.

use stasis_scenarios::torture::dr::{run_dr_campaign, run_dr_case_with, DrMutant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dr_cases_pass_with_every_disaster_kind() {
    let report = run_dr_campaign(16, 7, 4).await;
    assert_eq!(report.violations, 0, "{report:#?}");
    assert_eq!(report.failovers, 16);
    assert!(report.refused_nothing_on_b < 8, "most cases must fail over: {report:#?}");
    assert!(report.disasters.len() >= 3, "disaster kinds hit: {:?}", report.disasters);
    assert!(report.updates_failed > 0, "no link fault hit an update: {report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checker_catches_an_older_backup_and_a_state_that_is_not_the_backups() {
    let (mut applicable, mut caught_loss, mut caught_inexact, mut started) = (0, 0, 0, 0);
    for seed in 0..6u64 {
        // Applicable when some update had reached B: then an older (or no) start is a loss.
        let r = run_dr_case_with(100 + seed, Some(DrMutant::ForgetNewestBackups)).await;
        if r.updates_ok > 0 {
            applicable += 1;
            caught_loss += u64::from(!r.violations.is_empty());
        }
        let r = run_dr_case_with(200 + seed, Some(DrMutant::WriteBeforeCheck)).await;
        if r.refused_nothing_on_b == 0 {
            started += 1;
            caught_inexact += u64::from(r.torn_or_inexact > 0);
        }
    }
    assert!(applicable >= 3, "too few applicable cases: {applicable}");
    assert_eq!(caught_loss, applicable, "ForgetNewestBackups caught in {caught_loss} of {applicable}");
    assert!(started >= 3);
    assert_eq!(caught_inexact, started, "WriteBeforeCheck caught in {caught_inexact} of {started}");
}
