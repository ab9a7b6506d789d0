//! Bench: RPO and RTO of planned and unplanned failover between two simulators on
//! 127.0.0.1 (each reached through the real ONTAP client; transfers cross their intercluster
//! link over HTTP), with the simulated database on site A.
//!
//! Each run is a fresh pair of sites: DR set-up, writes, two replicated backups, more
//! writes, then
//! - planned: `failover_planned` (quiesce, stop, final snapshot, update, break, start on B,
//!   verify);
//! - unplanned: site A stops answering right after the last update succeeded (the best
//!   case of asynchronous DR: RPO is then the time from the backup's lock to the failover,
//!   i.e. freeze + snapshot + one transfer), `failover_unplanned` (break, revert to that
//!   backup, open, verify);
//! - unplanned mid-interval: the same, with writes for DR_BENCH_INTERVAL_MS after the last
//!   update before the disaster (RPO grows with the backup interval, by design).
//!
//! `cargo bench -p stasis-scenarios --bench dr_failover` prints medians over DR_BENCH_RUNS
//! runs (default 15). Without `--bench` (as under `cargo test --all-targets`) it returns at once.

use std::time::Duration;

use stasis_core::plugins::simdb::SimDb;
use stasis_scenarios::torture::dr::{TwoSites, TwoSitesConfig};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn work(db: &SimDb, n: u32, salt: u32) {
    for i in 0..n {
        let k = (i * 7 + salt) % db.n_keys();
        let _ = db.try_transfer(k, (k + 1) % db.n_keys(), 1 + u64::from(i % 5));
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Planned,
    UnplannedRightAfterUpdate,
    UnplannedMidInterval(Duration),
}

struct Figures {
    rpo_ms: Vec<f64>,
    rto_ms: Vec<f64>,
    bytes: Vec<f64>,
}

async fn one_run(seed: u64, kind: Kind) -> anyhow::Result<(f64, f64, u64)> {
    let s = TwoSites::start(TwoSitesConfig { seed, two_volumes: true, ..Default::default() }).await?;
    s.orchestrator.dr_setup(&s.app, &s.request(), &s.site_a, &s.site_b, s.bounds).await?;
    for round in 0..2 {
        work(&s.db, 200, round);
        let (_, update) = s.orchestrator.backup_and_replicate(&s.app, s.db.clone(), &s.site_b, true, s.bounds).await?;
        update?;
    }
    let standby = s.standby_b()?;
    let record = match kind {
        Kind::Planned => {
            work(&s.db, 200, 7);
            s.orchestrator.failover_planned(&s.app, &s.site_a, &s.site_b, s.db.clone(), standby, s.bounds).await?
        }
        Kind::UnplannedRightAfterUpdate => {
            s.site_a_down();
            s.orchestrator.failover_unplanned(&s.app, &s.site_b, standby).await?
        }
        Kind::UnplannedMidInterval(interval) => {
            let until = tokio::time::Instant::now() + interval;
            while tokio::time::Instant::now() < until {
                work(&s.db, 20, 9);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            s.site_a_down();
            s.orchestrator.failover_unplanned(&s.app, &s.site_b, standby).await?
        }
    };
    anyhow::ensure!(record.verified, "failover {} not verified", record.id);
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN);
    let out = (ms(record.rpo), ms(record.rto), record.bytes_transferred);
    s.shutdown().await;
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let runs = env_u64("DR_BENCH_RUNS", 15);
    let interval = Duration::from_millis(env_u64("DR_BENCH_INTERVAL_MS", 500));
    println!("DR failover in the simulator: two sites on 127.0.0.1, simdb on two volumes, {runs} runs each (medians; max)");
    let kinds = [
        ("planned (stop, final update, break, start on B)".to_string(), Kind::Planned),
        ("unplanned, site A lost right after an update".to_string(), Kind::UnplannedRightAfterUpdate),
        (format!("unplanned, site A lost {} ms after the last update", interval.as_millis()), Kind::UnplannedMidInterval(interval)),
    ];
    println!("{:<58} {:>12} {:>12} {:>12} {:>14}", "", "RPO ms p50", "RPO ms max", "RTO ms p50", "RTO ms max");
    for (label, kind) in kinds {
        let mut f = Figures { rpo_ms: Vec::new(), rto_ms: Vec::new(), bytes: Vec::new() };
        for i in 0..runs {
            let (rpo, rto, bytes) = one_run(1000 + i, kind).await?;
            f.rpo_ms.push(rpo);
            f.rto_ms.push(rto);
            f.bytes.push(bytes as f64);
        }
        println!("{label:<58} {:>12.2} {:>12.2} {:>12.2} {:>14.2}", median(f.rpo_ms.clone()), max(&f.rpo_ms), median(f.rto_ms.clone()), max(&f.rto_ms));
        if matches!(kind, Kind::Planned) {
            println!("{:<58} final update p50 {:.0} bytes", "", median(f.bytes));
        }
    }
    Ok(())
}
