//! End to end on a real PostgreSQL 15: the data directory on one FUSE-mounted simulator
//! volume and the WAL on a second (`initdb --waldir`), so each backup is one
//! consistency-group snapshot taken between `pg_backup_start` and `pg_backup_stop` by the
//! orchestrator through the ONTAP REST client, under a concurrent writer. Each backup is
//! restored to FlexClones and opened by a second server: every row acknowledged before the
//! quiesce is there, none acknowledged after the thaw, and the copy's control file shows
//! the backup's checkpoint.
//!
//! postgres refuses to run as root: the servers run as `nobody` (setpriv argument
//! vectors). Needs /usr/lib/postgresql/15/bin, /dev/fuse and fusermount3 (`bash
//! ci/install.sh`); without them the test fails saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stasis_core::domain::{AppKind, AppSpec, Consistency, RestoreMode};
use stasis_core::plugins::postgres::{PostgresConfig, PostgresPlugin, ServerControl};
use stasis_scenarios::mariadb::{free_port, MariaDbRig, SimWithMounts};

const BIN: &str = "/usr/lib/postgresql/15/bin";
const USER: &str = "stasis";
/// nobody:nogroup on Debian.
const RUN_AS: u32 = 65534;

fn as_nobody(program: &str, args: &[String]) -> Vec<String> {
    let mut argv = vec!["setpriv".to_string(), format!("--reuid={RUN_AS}"), format!("--regid={RUN_AS}"), "--clear-groups".into(), "--".into(), format!("{BIN}/{program}")];
    argv.extend(args.iter().cloned());
    argv
}

fn server_args(datadir: &str, port: &str) -> Vec<String> {
    ["-D", datadir, "-p", port, "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "shared_buffers=16MB", "-c", "max_wal_size=256MB"].iter().map(|s| s.to_string()).collect()
}

fn run(argv: &[String]) -> anyhow::Result<()> {
    let out = Command::new(&argv[0]).args(&argv[1..]).env("LC_ALL", "C").stdin(Stdio::null()).output()?;
    anyhow::ensure!(out.status.success(), "{:?} failed: {}", argv, String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A postgres server; dropping it shuts it down (fast), or kills it.
struct Postgres {
    child: Child,
    port: u16,
}

impl Postgres {
    fn start(datadir: &Path) -> anyhow::Result<Postgres> {
        let port = free_port()?;
        let argv = as_nobody("postgres", &server_args(&datadir.to_string_lossy(), &port.to_string()));
        let child = Command::new(&argv[0]).args(&argv[1..]).env("LC_ALL", "C").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        Ok(Postgres { child, port })
    }

    async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut cfg = tokio_postgres::Config::new();
            cfg.host("127.0.0.1").port(self.port).user(USER).dbname("postgres");
            match cfg.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    return Ok(client);
                }
                Err(e) if Instant::now() > deadline => anyhow::bail!("postgres on port {} did not answer: {e}", self.port),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require_postgres() {
    for bin in ["postgres", "initdb", "pg_controldata"] {
        assert!(Path::new(BIN).join(bin).is_file(), "{BIN}/{bin} is missing: run `bash ci/install.sh` (Debian package postgresql-15)");
    }
    assert!(Path::new("/usr/bin/setpriv").is_file(), "setpriv is missing (util-linux)");
}

fn chown_nobody(path: &Path) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(RUN_AS), Some(RUN_AS))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_under_load_restore_to_clones_on_a_real_postgres() -> anyhow::Result<()> {
    require_postgres();
    let sim = SimWithMounts::start(5, stasis_scenarios::mariadb::SIM_PASSWORD).await?;
    let (_, data_mount) = sim.create_volume("pg_data", 1 << 30).await?;
    let (_, wal_mount) = sim.create_volume("pg_wal", 1 << 30).await?;
    let (datadir, waldir) = (data_mount.join("data"), wal_mount.join("wal"));
    for (mount, dir) in [(&data_mount, &datadir), (&wal_mount, &waldir)] {
        chown_nobody(mount)?;
        std::fs::create_dir(dir)?;
        chown_nobody(dir)?;
    }
    run(&as_nobody("initdb", &["-D".into(), datadir.to_string_lossy().into(), "--waldir".into(), waldir.to_string_lossy().into(), "-U".into(), USER.into(), "--auth=trust".into(), "-E".into(), "UTF8".into()]))?;
    let server = Postgres::start(&datadir)?;
    let client = server.client().await?;
    client.batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY, payload text NOT NULL)").await?;

    let freeze_timeout = Duration::from_secs(5);
    let control = ServerControl {
        stop_command: vec!["false".into()],
        start_command: vec!["false".into()],
        mount_root: sim.mount_root(),
        data_subdir: PathBuf::from("data"),
        wal_subdir: Some(PathBuf::from("wal")),
        instance_command: as_nobody("postgres", &server_args("{datadir}", "{port}")),
        controldata_command: vec![format!("{BIN}/pg_controldata"), "-D".into(), "{datadir}".into()],
        start_wait: Duration::from_secs(60),
    };
    let plugin = Arc::new(PostgresPlugin::new(PostgresConfig { host: "127.0.0.1".into(), port: server.port, user: USER.into(), password: None, dbname: "postgres".into(), freeze_timeout, server_control: Some(control) })?);
    let app = AppSpec { name: "pgapp".into(), kind: AppKind::Postgres, svm: "svm0".into(), volumes: vec!["pg_data".into(), "pg_wal".into()], freeze_timeout };
    let orchestrator = MariaDbRig::orchestrator(&sim, Duration::from_secs(5), 5)?;

    // One writer: each row is acknowledged (committed) before the next starts.
    let acked: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, client) = (acked.clone(), stop.clone(), server.client().await?);
        tokio::spawn(async move {
            let mut id = 0i64;
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                if client.execute("INSERT INTO acked VALUES ($1, $2)", &[&id, &format!("row {id}")]).await.is_err() {
                    break;
                }
                acked.lock().unwrap().push((id, Instant::now()));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut backups = Vec::new();
    for _ in 0..2 {
        let before = Instant::now();
        let outcome = orchestrator.backup(&app, plugin.clone()).await?;
        let after = Instant::now();
        assert_eq!(outcome.record.consistency, Some(Consistency::Application), "{:?}", outcome.record);
        assert_eq!(outcome.record.snapshots.len(), 2, "one consistency-group snapshot of data and WAL");
        backups.push((outcome.record, before, after));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await?;
    let history = acked.lock().unwrap().clone();
    assert!(history.len() > 50, "the writer committed too little: {}", history.len());
    // The server is not left in backup mode.
    let in_backup: bool = client.query_one("SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name = 'stasis'", &[]).await?.get(0);
    assert!(!in_backup, "the backup session is gone after the thaw");

    for (backup, before, after) in &backups {
        let restore = orchestrator.restore_to_clone(&app, &backup.id, plugin.clone()).await?;
        assert_eq!(restore.recovered_point, backup.evidence.consistency_point, "the copy's control file shows the backup's checkpoint");
        let RestoreMode::Clone { clone_names } = &restore.mode else { panic!("a clone restore") };
        // The clone's pg_wal was pointed at the WAL clone by recover(); open it again and read.
        let clone_data = sim.mounts().mount_point(&format!("/{}", clone_names[0])).join("data");
        let second = Postgres::start(&clone_data)?;
        let rows: Vec<i64> = second.client().await?.query("SELECT id FROM acked ORDER BY id", &[]).await?.iter().map(|r| r.get(0)).collect();
        drop(second);
        let must: Vec<i64> = history.iter().filter(|(_, t)| t < before).map(|(id, _)| *id).collect();
        let must_not: Vec<i64> = history.iter().filter(|(_, t)| t > after).map(|(id, _)| *id).collect();
        assert!(!must.is_empty() && !must_not.is_empty(), "the check could fail: rows on both sides of backup {}", backup.id);
        for id in &must {
            assert!(rows.binary_search(id).is_ok(), "row {id}, acknowledged before backup {} started, is missing from its restore", backup.id);
        }
        for id in &must_not {
            assert!(rows.binary_search(id).is_err(), "row {id}, acknowledged after backup {} ended, is in its restore", backup.id);
        }
        orchestrator.delete_clone_restore(&restore.id).await?;
    }
    drop(client);
    drop(server);
    Ok(())
}
