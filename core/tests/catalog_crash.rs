//! Crash safety of the SQLite catalog at every write point.
//!
//! A child process (this test binary, re-invoked with `STASIS_CATALOG_CHILD=path,k`) runs a
//! scripted sequence of catalog writes, printing `wrote j` after write j. The parent kills it
//! with SIGKILL when it reads `wrote k`, reopens the file (replaying the WAL the child left)
//! and checks that the catalog holds exactly the state after some whole number of writes.
//!
//! This covers process crashes (the orchestrator killed or OOM-killed mid-call). Power loss is
//! left to SQLite's WAL with `synchronous=FULL`, which a test here cannot cut.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use stasis_core::catalog::{Catalog, CatalogResult};
use stasis_core::domain::*;
use stasis_core::sqlite_catalog::SqliteCatalog;

const CHILD_ENV: &str = "STASIS_CATALOG_CHILD";
/// Bound on waiting for one line from the child.
const CHILD_LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// One catalog call of the script.
#[derive(Clone, Debug)]
enum Write {
    App(AppSpec),
    AppPolicy(&'static str, Option<&'static str>),
    Backup(BackupRecord),
    DeleteBackup(&'static str),
    Restore(RestoreRecord),
    Policy(Policy),
}

impl Write {
    fn apply(&self, c: &dyn Catalog) -> CatalogResult<()> {
        match self {
            Write::App(a) => c.put_app(a),
            Write::AppPolicy(app, policy) => c.set_app_policy(app, *policy),
            Write::Backup(b) => c.put_backup(b),
            Write::DeleteBackup(id) => c.delete_backup(id),
            Write::Restore(r) => c.put_restore(r),
            Write::Policy(p) => c.put_policy(p),
        }
    }
}

fn t0() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

/// A backup's and a restore's life, with records replaced as a whole several fields at a
/// time, so that a torn write (some fields old, some new) would show.
fn script() -> Vec<Write> {
    let ms = TimeDelta::milliseconds;
    let app = AppSpec {
        name: "shop".into(),
        kind: AppKind::Mysql,
        svm: "svm1".into(),
        volumes: vec!["shop_data".into(), "shop_log".into()],
        freeze_timeout: Duration::from_secs(5),
    };
    let gold = Policy {
        name: "gold".into(),
        schedule: Schedule::Interval { every: Duration::from_secs(3600) },
        keep_last: Some(3),
        max_age: None,
    };
    let snapshot = |volume: &str| SnapshotRef {
        volume_uuid: format!("{volume}-uuid"),
        volume_name: volume.into(),
        snapshot_uuid: format!("{volume}-snap-uuid"),
        create_time: t0() + ms(1000),
    };
    let pending = |id: &str, started_at| BackupRecord {
        id: id.into(),
        app: "shop".into(),
        snapshot_name: BackupRecord::snapshot_name_for(id),
        state: BackupState::Pending,
        consistency: None,
        evidence: Evidence::default(),
        snapshots: vec![],
        started_at,
        finished_at: None,
        error: None,
        verified: false,
        expired: false,
    };
    let b1 = pending("b1", t0());
    let b1_quiesced = BackupRecord {
        state: BackupState::Quiesced,
        evidence: Evidence {
            lock_requested: Some(t0() + ms(100)),
            lock_granted: Some(t0() + ms(102)),
            lock_released: None,
            consistency_point: Some(ConsistencyPoint("0-1-4711".into())),
            thaw_error: None,
        },
        ..b1.clone()
    };
    let b1_snapshotted = BackupRecord {
        state: BackupState::Snapshotted,
        evidence: Evidence { lock_released: Some(t0() + ms(1200)), ..b1_quiesced.evidence.clone() },
        snapshots: vec![snapshot("shop_data"), snapshot("shop_log")],
        ..b1_quiesced.clone()
    };
    let b1_complete = BackupRecord {
        state: BackupState::Complete,
        consistency: Some(Consistency::Application),
        finished_at: Some(t0() + ms(1500)),
        verified: true,
        ..b1_snapshotted.clone()
    };
    let b2 = pending("b2", t0() + ms(3_600_000));
    let b2_failed = BackupRecord {
        state: BackupState::Failed,
        consistency: Some(Consistency::Crash),
        finished_at: Some(t0() + ms(3_605_000)),
        error: Some("snapshot create timed out".into()),
        ..b2.clone()
    };
    let r1 = RestoreRecord {
        id: "r1".into(),
        backup_id: "b1".into(),
        app: "shop".into(),
        mode: RestoreMode::Clone { clone_names: vec!["shop_data_r1".into(), "shop_log_r1".into()] },
        state: RestoreState::Pending,
        clone_volumes: vec![],
        started_at: t0() + ms(7_200_000),
        finished_at: None,
        recovered_point: None,
        needed_crash_recovery: None,
        error: None,
    };
    let r1_complete = RestoreRecord {
        state: RestoreState::Complete,
        clone_volumes: vec![("u1".into(), "shop_data_r1".into()), ("u2".into(), "shop_log_r1".into())],
        finished_at: Some(t0() + ms(7_260_000)),
        recovered_point: Some(ConsistencyPoint("0-1-4711".into())),
        needed_crash_recovery: Some(false),
        ..r1.clone()
    };
    vec![
        Write::Policy(gold.clone()),
        Write::App(app.clone()),
        Write::AppPolicy("shop", Some("gold")),
        Write::Backup(b1),
        Write::Backup(b1_quiesced),
        Write::Backup(b1_snapshotted),
        Write::Backup(b1_complete.clone()),
        Write::Backup(b2),
        Write::Backup(b2_failed),
        Write::Restore(r1),
        Write::Restore(r1_complete),
        Write::App(AppSpec { volumes: vec!["shop_data".into()], freeze_timeout: Duration::from_secs(2), ..app }),
        Write::Policy(Policy {
            schedule: Schedule::Cron { expr: "0 3 * * *".into() },
            keep_last: Some(7),
            max_age: Some(Duration::from_secs(30 * 86_400)),
            ..gold
        }),
        Write::DeleteBackup("b2"),
        Write::Backup(BackupRecord { expired: true, ..b1_complete }),
        Write::AppPolicy("shop", None),
    ]
}

/// Everything the catalog holds, read through the trait.
#[derive(Debug, PartialEq)]
struct Content {
    apps: Vec<(AppSpec, Option<String>)>,
    backups: Vec<BackupRecord>,
    restores: Vec<RestoreRecord>,
    policies: Vec<Policy>,
}

fn content(c: &dyn Catalog) -> Content {
    let apps = c.apps().unwrap().into_iter().map(|a| (c.app_policy(&a.name).unwrap(), a)).map(|(policy, a)| (a, policy));
    let apps = apps.collect();
    let backups = c.backups(None).unwrap();
    // The indexed columns must agree with the records: the per-app listing is the filter.
    let shop: Vec<_> = backups.iter().filter(|b| b.app == "shop").cloned().collect();
    assert_eq!(c.backups(Some("shop")).unwrap(), shop);
    for b in &backups {
        assert_eq!(c.backup(&b.id).unwrap().as_ref(), Some(b));
    }
    Content { apps, backups, restores: c.restores(None).unwrap(), policies: c.policies().unwrap() }
}

/// `states[j]` is the content after the first j writes of the script.
fn expected_states() -> Vec<Content> {
    let c = SqliteCatalog::open_in_memory().unwrap();
    let mut states = vec![content(&c)];
    for w in script() {
        w.apply(&c).unwrap();
        states.push(content(&c));
    }
    // Every write is visible, so "after k or after k + 1" is a real constraint.
    for pair in states.windows(2) {
        assert_ne!(pair[0], pair[1]);
    }
    states
}

/// The child: apply writes 1..=min(k + 1, n), announcing each, then wait to be killed. The
/// write after `wrote k` is in flight when the parent's SIGKILL arrives, or just done.
fn run_child(spec: &str) -> ! {
    let (path, k) = spec.rsplit_once(',').expect("STASIS_CATALOG_CHILD=path,k");
    let k: usize = k.parse().expect("k is a number");
    let catalog = SqliteCatalog::open(path).expect("child opens the catalog");
    let script = script();
    println!("wrote 0");
    for (j, w) in script.iter().enumerate().take(k + 1) {
        w.apply(&catalog).expect("child write");
        println!("wrote {}", j + 1);
    }
    // Block until killed; if the parent dies first, its end of the pipe closes and we exit.
    let _ = std::io::stdin().read(&mut [0]);
    std::process::exit(0)
}

/// Spawns the child for `path,k` (re-running `test_name` in this binary) and a thread that
/// forwards its stdout lines.
fn spawn_child(test_name: &str, path: &Path, k: usize) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{},{k}", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for the line `wrote {k}` and `delay` more, then SIGKILLs the child (std's `kill` is
/// SIGKILL on Unix).
fn kill_after(mut child: Child, lines: &mpsc::Receiver<String>, k: usize, delay: Duration) {
    let want = format!("wrote {k}");
    loop {
        match lines.recv_timeout(CHILD_LINE_TIMEOUT) {
            // The first line also carries libtest's "test name ... " prefix.
            Ok(line) if line.ends_with(&want) => break,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("child never reported {want:?}: {e:?} (exit: {:?})", child.wait());
            }
        }
    }
    std::thread::sleep(delay);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished: {status:?}");
}

/// Reopens the catalog a killed child left and returns how many writes it holds, asserting
/// that it is exactly the state after one of `allowed` writes.
fn recovered_writes(path: &Path, states: &[Content], allowed: std::ops::RangeInclusive<usize>) -> usize {
    let wal = path.with_extension("db-wal");
    assert!(std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0), "the killed child left a WAL to replay");
    let catalog = SqliteCatalog::open(path).unwrap();
    catalog.integrity_check().unwrap();
    let got = content(&catalog);
    match allowed.clone().find(|&j| states[j] == got) {
        Some(j) => j,
        None => panic!("catalog after the kill is none of the states after {allowed:?} writes: {got:#?}"),
    }
}

#[test]
fn sigkill_right_after_each_write() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
    }
    let started = Instant::now();
    let states = expected_states();
    let n = states.len() - 1;
    let mut landed_after_next = 0;
    for k in 0..=n {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let (child, lines) = spawn_child("sigkill_right_after_each_write", &path, k);
        kill_after(child, &lines, k, Duration::ZERO);
        let j = recovered_writes(&path, &states, k..=(k + 1).min(n));
        landed_after_next += usize::from(j == k + 1);
    }
    // Both outcomes are fine; the count shows whether the kill really raced a write.
    println!("{} kills, {landed_after_next} landed after write k + 1, in {:?}", n + 1, started.elapsed());
}

#[test]
fn sigkill_racing_a_batch() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
    }
    let started = Instant::now();
    let states = expected_states();
    let n = states.len() - 1;
    // The child runs the whole script without pausing; the kill is sent some time after it
    // reports write m (a write with its fsync takes a few ms here) and lands wherever the
    // child has got to by then.
    for (m, delay_ms) in [(0, 0), (1, 3), (n / 3, 6), (n / 2, 10)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let (child, lines) = spawn_child("sigkill_racing_a_batch", &path, n);
        kill_after(child, &lines, m, Duration::from_millis(delay_ms));
        let j = recovered_writes(&path, &states, m..=n);
        println!("kill sent {delay_ms} ms after write {m} of {n} landed after write {j}");
    }
    println!("in {:?}", started.elapsed());
}
