//! Real MariaDB on a simulated volume: figures, printed (no assertions).
//!
//! 1. Freeze window (lock granted -> released, from the backup's evidence) over
//!    `MARIADB_BENCH_BACKUPS` (default 200) backups by the orchestrator under 4 concurrent
//!    writers, simulator on loopback: p50 / p99 / max.
//! 2. Insert throughput of the same writers (4, autocommit, InnoDB/MyISAM/Aria rows) for
//!    `MARIADB_BENCH_SECS` (default 5) seconds with the data directory on the FUSE mount
//!    vs a plain directory: commits per second and the ratio.
//!
//! `cargo bench -p stasis-tests --bench mariadb`

use std::time::{Duration, Instant};

use stasis_scenarios::mariadb::{MariaDbRig, RigOptions};
use stasis_tests::mariadb::{create_schema, Writers};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn freeze_windows(n_backups: usize) -> anyhow::Result<()> {
    let rig = MariaDbRig::start(RigOptions::default()).await?;
    create_schema(&rig).await?;
    let writers = Writers::start(&rig, 4).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut windows_ms = Vec::with_capacity(n_backups);
    let started = Instant::now();
    for _ in 0..n_backups {
        let outcome = rig.orchestrator.backup(&rig.app, rig.plugin_dyn()).await?;
        windows_ms.push(outcome.record.evidence.freeze_window().unwrap_or_default().as_secs_f64() * 1e3);
    }
    let elapsed = started.elapsed();
    let history = writers.stop().await;
    windows_ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "freeze window, real MariaDB 10.11 on a FUSE-mounted simulator volume, 4 writers, {n_backups} backups: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({:.0} ms per backup end to end; {} commits during the run)",
        percentile(&windows_ms, 0.5),
        percentile(&windows_ms, 0.99),
        windows_ms.last().copied().unwrap_or_default(),
        elapsed.as_secs_f64() * 1e3 / n_backups as f64,
        history.acked.len()
    );
    Ok(())
}

/// Server options of the throughput runs: `MARIADB_BENCH_FLUSH_METHOD` overrides the
/// launcher's `innodb_flush_method` (to compare `O_DIRECT` with the default `fsync`).
fn server_options() -> stasis_scenarios::mariadb::MariaDbOptions {
    let mut opts = stasis_scenarios::mariadb::MariaDbOptions::default();
    if let Ok(method) = std::env::var("MARIADB_BENCH_FLUSH_METHOD") {
        opts.extra_args.push(format!("--innodb-flush-method={method}"));
    }
    opts
}

async fn throughput_on(rig_dir: Option<&std::path::Path>, secs: u64) -> anyhow::Result<f64> {
    use stasis_scenarios::mariadb::MariaDb;
    // The FUSE case uses the rig; the plain case a server in a temporary directory, same options.
    let (rig, _plain, _dir);
    let writers = match rig_dir {
        None => {
            rig = MariaDbRig::start(RigOptions { server: server_options(), ..Default::default() }).await?;
            create_schema(&rig).await?;
            Writers::start(&rig, 4).await?
        }
        Some(base) => {
            let dir = tempfile_dir(base)?;
            let password = "bench-password";
            let server = MariaDb::install_and_start(&dir.join("data"), password, server_options()).await?;
            stasis_tests::mariadb::create_schema_on(&server, password).await?;
            let w = Writers::start_on(&server, password, 4).await?;
            _plain = server;
            _dir = dir;
            w
        }
    };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let history = writers.stop().await;
    Ok(history.acked.len() as f64 / secs as f64)
}

fn tempfile_dir(base: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = base.join(format!("plain-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build()?;
    let n_backups: usize = env_or("MARIADB_BENCH_BACKUPS", 200);
    let secs: u64 = env_or("MARIADB_BENCH_SECS", 5);
    if n_backups > 0 {
        runtime.block_on(freeze_windows(n_backups))?;
    }
    let plain_root = std::env::temp_dir().join(format!("stasis-bench-{}", std::process::id()));
    std::fs::create_dir_all(&plain_root)?;
    let fuse = runtime.block_on(throughput_on(None, secs))?;
    let plain = runtime.block_on(throughput_on(Some(&plain_root), secs))?;
    let _ = std::fs::remove_dir_all(&plain_root);
    println!("insert throughput, 4 writers, autocommit, {secs} s: FUSE mount {fuse:.0} commits/s, plain directory ({}) {plain:.0} commits/s, ratio {:.2}", std::env::temp_dir().display(), fuse / plain);
    Ok(())
}
