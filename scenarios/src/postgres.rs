//! Real PostgreSQL for tests and campaigns: `initdb` + `pg_ctl` on a free 127.0.0.1 port,
//! the data directory (and optionally the WAL, `initdb --waldir`) on FUSE-mounted simulator
//! volumes ([`SimWithMounts`]), and a rig that wires the PostgreSQL plugin and an
//! orchestrator on the ONTAP REST client to it, as production does.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (CI containers do), every
//! PostgreSQL program runs as `nobody` through `setpriv` (argument vectors, no shell). The
//! server is started with `pg_ctl start -w` because the plugin's `start_command` must return
//! once the server answers; `Drop` stops it (`pg_ctl stop -m immediate`) and kills what is
//! left through `postmaster.pid`, so a failing test leaves no server behind.
//!
//! # Server settings (appended to the fresh cluster's `postgresql.conf`, so copies inherit them)
//! - `listen_addresses = '127.0.0.1'`, `unix_socket_directories = ''`: loopback TCP only;
//!   two servers on copies of one data directory cannot collide on a socket.
//! - `wal_keep_size`: the WAL from the first write to the last stays in `pg_wal`, so a
//!   checker can read the commit order from it (`pg_waldump`) after the run.
//! - Small `shared_buffers`: tests start many servers on two cores.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::mariadb::{free_port, wait_until_mounted, SimWithMounts, SIM_PASSWORD, SVM};

/// How long a server may take to accept connections (crash recovery included).
pub const START_WAIT_MAX: Duration = Duration::from_secs(60);
/// How long `pg_ctl stop` may take in `Drop` before the server is killed.
const STOP_WAIT_MAX: Duration = Duration::from_secs(20);
/// Attempts to start on a fresh free port when the one picked was taken meanwhile.
const PORT_ATTEMPTS_MAX: u32 = 3;
/// The role `initdb` creates (superuser, trust authentication on loopback).
pub const USER: &str = "stasis";
/// `nobody:nogroup` on Debian: who runs PostgreSQL when the tests run as root.
const RUN_AS_ID: u32 = 65534;
/// Where Debian's `postgresql-NN` packages put the server programs.
const PG_LIB: &str = "/usr/lib/postgresql";

/// The directory holding `postgres`, `initdb`, `pg_ctl`, `pg_controldata`, `pg_waldump`:
/// `/usr/lib/postgresql/<newest>/bin`. An error says how to install them.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_LIB)
        .map(|d| d.filter_map(|e| e.ok()).filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))).collect())
        .unwrap_or_default();
    versions.sort();
    let dir = versions.into_iter().map(|(_, d)| d).rfind(|d| d.join("postgres").is_file());
    let dir = dir.with_context(|| format!("PostgreSQL is not installed (no {PG_LIB}/<version>/bin/postgres): run `bash ci/install.sh` (Debian package postgresql)"))?;
    for program in ["initdb", "pg_ctl", "pg_controldata", "pg_waldump"] {
        anyhow::ensure!(dir.join(program).is_file(), "{} is missing: run `bash ci/install.sh` (Debian package postgresql)", dir.join(program).display());
    }
    Ok(dir)
}

/// Are PostgreSQL's programs (and `setpriv` when running as root) installed?
pub fn check_prerequisites() -> anyhow::Result<()> {
    bin_dir()?;
    if running_as_root() {
        anyhow::ensure!(Path::new("/usr/bin/setpriv").is_file(), "setpriv is missing (PostgreSQL refuses to run as root; the tests run it as nobody): install util-linux");
    }
    Ok(())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0")))
        .unwrap_or(false)
}

/// The argument vector that runs PostgreSQL program `program` with `args`, as `nobody`
/// when this process is root.
pub fn command(program: &str, args: &[String]) -> anyhow::Result<Vec<String>> {
    let mut argv = Vec::new();
    if running_as_root() {
        argv.extend(["/usr/bin/setpriv".to_string(), format!("--reuid={RUN_AS_ID}"), format!("--regid={RUN_AS_ID}"), "--clear-groups".into(), "--".into()]);
    }
    argv.push(bin_dir()?.join(program).to_string_lossy().into_owned());
    argv.extend(args.iter().cloned());
    Ok(argv)
}

/// Make `path` belong to whoever runs PostgreSQL (a no-op unless this process is root).
pub fn hand_over(path: &Path) -> anyhow::Result<()> {
    if running_as_root() {
        std::os::unix::fs::chown(path, Some(RUN_AS_ID), Some(RUN_AS_ID)).with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

fn run(argv: &[String]) -> anyhow::Result<std::process::Output> {
    let out = Command::new(&argv[0]).args(&argv[1..]).env("LC_ALL", "C").stdin(Stdio::null()).output().with_context(|| format!("running {}", argv[0]))?;
    Ok(out)
}

fn run_ok(argv: &[String]) -> anyhow::Result<String> {
    let out = run(argv)?;
    if !out.status.success() {
        bail!("{argv:?} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `initdb` a fresh cluster in `data_dir` (created; must not exist or be empty), with its WAL
/// in `wal_dir` if given, and the settings described at the top of this file.
pub fn init(data_dir: &Path, wal_dir: Option<&Path>) -> anyhow::Result<()> {
    for dir in std::iter::once(data_dir).chain(wal_dir) {
        if let Some(parent) = dir.parent() {
            wait_until_mounted(parent)?;
            hand_over(parent)?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        hand_over(dir)?;
    }
    let mut args: Vec<String> = vec!["-D".into(), data_dir.to_string_lossy().into(), "-U".into(), USER.into(), "--auth=trust".into(), "-E".into(), "UTF8".into(), "--no-sync".into()];
    if let Some(wal) = wal_dir {
        args.extend(["--waldir".into(), wal.to_string_lossy().into_owned()]);
    }
    if let Err(e) = run_ok(&command("initdb", &args)?) {
        // Diagnose: is each volume still mounted, what does its root hold?
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let state: Vec<String> = std::iter::once(data_dir)
            .chain(wal_dir)
            .filter_map(|d| d.parent())
            .map(|p| {
                let mounted = mounts.lines().any(|l| l.split(' ').nth(4) == Some(&*p.to_string_lossy()));
                let entries: Vec<String> = std::fs::read_dir(p).map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
                format!("{} mounted={mounted} entries={entries:?}", p.display())
            })
            .collect();
        return Err(e.context(format!("initdb failed; {}", state.join("; "))));
    }
    let settings = "\n# stasis test harness (scenarios/src/postgres.rs)\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nshared_buffers = 16MB\nmax_connections = 40\nmax_wal_size = 256MB\nwal_keep_size = 512MB\n";
    let conf = data_dir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).with_context(|| format!("reading {}", conf.display()))?;
    text.push_str(settings);
    std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
    Ok(())
}

/// The first line of `postmaster.pid`: the postmaster's pid.
fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
}

fn is_postgres(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).map(|c| String::from_utf8_lossy(&c).contains("postgres")).unwrap_or(false)
}

/// SIGKILL a postmaster that is not our child (pg_ctl started it) and wait until it is gone
/// or a zombie; its backends notice the postmaster's death and exit.
fn kill_postmaster(pid: u32) {
    if !is_postgres(pid) {
        return;
    }
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running PostgreSQL server (started by `pg_ctl`). Dropping it stops it.
pub struct Postgres {
    data_dir: PathBuf,
    port: u16,
    run_dir: tempfile::TempDir,
    /// Every postmaster pid seen (a restore's `start_command` starts a new one).
    pids: std::sync::Mutex<Vec<u32>>,
}

impl Postgres {
    /// Start a server on `data_dir` (a fresh cluster, a restored volume or a clone) and wait
    /// until it accepts connections. A stale `postmaster.pid` of a copy is removed first.
    pub async fn start(data_dir: &Path) -> anyhow::Result<Postgres> {
        check_prerequisites()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS_MAX {
            let run_dir = tempfile::Builder::new().prefix("postgres-run-").tempdir().context("creating the run directory")?;
            hand_over(run_dir.path())?;
            let server = Postgres { data_dir: data_dir.to_path_buf(), port: free_port()?, run_dir, pids: Default::default() };
            let out = tokio::task::spawn_blocking({
                let argv = server.start_command()?;
                move || run(&argv)
            })
            .await??;
            server.note_pid();
            if out.status.success() {
                server.client().await?;
                return Ok(server);
            }
            let log = server.log();
            let error = anyhow::anyhow!("pg_ctl start failed ({}): {}\nserver log:\n{log}", out.status, String::from_utf8_lossy(&out.stderr));
            let port_taken = log.contains("Address already in use") || log.contains("could not bind");
            drop(server);
            if !port_taken {
                return Err(error);
            }
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("postgres did not start")))
    }

    fn note_pid(&self) {
        if let Some(pid) = postmaster_pid(&self.data_dir) {
            let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    pub fn log_path(&self) -> PathBuf {
        self.run_dir.path().join("server.log")
    }
    /// The server log of this run (every start by `start_command` appends to it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `pg_ctl start -w` on this data directory, port and log: returns once the server
    /// answers (the plugin's `start_command`).
    pub fn start_command(&self) -> anyhow::Result<Vec<String>> {
        command(
            "pg_ctl",
            &[
                "start".into(),
                "-w".into(),
                "-t".into(),
                START_WAIT_MAX.as_secs().to_string(),
                "-D".into(),
                self.data_dir.to_string_lossy().into(),
                "-l".into(),
                self.log_path().to_string_lossy().into(),
                // pg_ctl hands -o to postgres through /bin/sh: only our own number goes in.
                "-o".into(),
                format!("-p {}", self.port),
            ],
        )
    }

    /// `pg_ctl stop -m fast -w`: a clean shutdown (the plugin's `stop_command`).
    pub fn stop_command(&self) -> anyhow::Result<Vec<String>> {
        command("pg_ctl", &["stop".into(), "-m".into(), "fast".into(), "-w".into(), "-t".into(), START_WAIT_MAX.as_secs().to_string(), "-D".into(), self.data_dir.to_string_lossy().into()])
    }

    /// A connection as [`USER`] to `postgres`, retried until the server answers (bounded).
    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.note_pid();
        connect(self.port, START_WAIT_MAX).await
    }
}

/// Connect as [`USER`] to database `postgres` on `port`, retrying until `wait` has passed.
pub async fn connect(port: u16, wait: Duration) -> anyhow::Result<tokio_postgres::Client> {
    let deadline = Instant::now() + wait;
    loop {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1").port(port).user(USER).dbname("postgres").connect_timeout(Duration::from_secs(2));
        match cfg.connect(tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return Ok(client);
            }
            Err(e) if Instant::now() > deadline => bail!("postgres on port {port} did not answer within {wait:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.note_pid();
        if let Ok(argv) = command("pg_ctl", &["stop".into(), "-m".into(), "immediate".into(), "-w".into(), "-t".into(), STOP_WAIT_MAX.as_secs().to_string(), "-D".into(), self.data_dir.to_string_lossy().into()]) {
            let _ = Command::new(&argv[0]).args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        for pid in self.pids.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            kill_postmaster(*pid);
        }
    }
}

/// The plugin's `instance_command`: a private server in the foreground on `{datadir}`,
/// `{port}` (the copy's `postgresql.conf` has the loopback settings).
pub fn instance_command() -> anyhow::Result<Vec<String>> {
    command("postgres", &["-D".into(), "{datadir}".into(), "-p".into(), "{port}".into()])
}

/// The plugin's `controldata_command`.
pub fn controldata_command() -> anyhow::Result<Vec<String>> {
    command("pg_controldata", &["-D".into(), "{datadir}".into()])
}

/// `X/Y` -> a 64-bit WAL position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The commit record's WAL position of every transaction committed in the WAL segments
/// of `wal_dir` (read with `pg_waldump`, an independent reader of the server's log). The
/// WAL must be complete from the first write of interest (see `wal_keep_size` above).
pub fn commit_lsns(wal_dir: &Path) -> anyhow::Result<HashMap<u64, u64>> {
    let mut segments: Vec<String> = std::fs::read_dir(wal_dir)
        .with_context(|| format!("listing {}", wal_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    segments.sort();
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else { bail!("no WAL segment in {}", wal_dir.display()) };
    // Without the end segment pg_waldump reads the first segment only.
    let out = run(&command("pg_waldump", &["--path".into(), wal_dir.to_string_lossy().into(), "--rmgr".into(), "Transaction".into(), first.clone(), last.clone()])?)?;
    // pg_waldump ends with an error at the end of the valid WAL (exit 1): expected.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut commits = HashMap::new();
    for line in stdout.lines() {
        let field = |name: &str| line.split(name).nth(1).map(|rest| rest.trim_start().split([',', ' ']).next().unwrap_or("").to_string());
        if !line.contains("desc: COMMIT") {
            continue;
        }
        if let (Some(Ok(xid)), Some(Some(lsn))) = (field("tx:").map(|x| x.parse::<u64>()), field("lsn:").map(|l| parse_lsn(&l))) {
            commits.insert(xid, lsn);
        }
    }
    if commits.is_empty() {
        bail!("pg_waldump found no commit in {}: {}", wal_dir.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(commits)
}

/// Names of the rig's volumes (junction paths `/pg_data`, `/pg_wal`).
pub const DATA_VOLUME: &str = "pg_data";
pub const WAL_VOLUME: &str = "pg_wal";
pub const DATA_SUBDIR: &str = "data";
pub const WAL_SUBDIR: &str = "wal";

/// A simulator with FUSE mounts, a real PostgreSQL with its data directory on one simulated
/// volume and (with `wal_volume`) its WAL on a second, the PostgreSQL plugin with server
/// control, and an orchestrator on the ONTAP REST client. Field order is drop order: the
/// server stops before the unmount.
pub struct PgRig {
    pub server: Postgres,
    pub plugin: Arc<stasis_core::plugins::postgres::PostgresPlugin>,
    pub orchestrator: stasis_core::workflow::Orchestrator,
    pub app: stasis_core::domain::AppSpec,
    pub wal_dir: PathBuf,
    pub sim: SimWithMounts,
}

#[derive(Clone, Debug)]
pub struct PgRigOptions {
    pub seed: u64,
    /// WAL on its own volume (the backup is then a consistency-group snapshot).
    pub wal_volume: bool,
    pub freeze_timeout: Duration,
    pub client_timeout: Duration,
    pub app_name: String,
}

impl Default for PgRigOptions {
    fn default() -> Self {
        PgRigOptions { seed: 1, wal_volume: true, freeze_timeout: Duration::from_secs(5), client_timeout: Duration::from_secs(5), app_name: "pgapp".into() }
    }
}

impl PgRig {
    pub async fn start(opts: PgRigOptions) -> anyhow::Result<PgRig> {
        use stasis_core::plugins::postgres::{PostgresConfig, PostgresPlugin, ServerControl};
        check_prerequisites()?;
        let sim = SimWithMounts::start(opts.seed, SIM_PASSWORD).await?;
        let (_, data_mount) = sim.create_volume(DATA_VOLUME, 1 << 30).await?;
        let data_dir = data_mount.join(DATA_SUBDIR);
        let mut volumes = vec![DATA_VOLUME.to_string()];
        let wal_dir = if opts.wal_volume {
            let (_, wal_mount) = sim.create_volume(WAL_VOLUME, 1 << 30).await?;
            volumes.push(WAL_VOLUME.into());
            let wal_dir = wal_mount.join(WAL_SUBDIR);
            init(&data_dir, Some(&wal_dir))?;
            wal_dir
        } else {
            init(&data_dir, None)?;
            data_dir.join("pg_wal")
        };
        let server = Postgres::start(&data_dir).await?;
        let control = ServerControl {
            stop_command: server.stop_command()?,
            start_command: server.start_command()?,
            mount_root: sim.mount_root(),
            data_subdir: DATA_SUBDIR.into(),
            wal_subdir: opts.wal_volume.then(|| WAL_SUBDIR.into()),
            instance_command: instance_command()?,
            controldata_command: controldata_command()?,
            start_wait: START_WAIT_MAX,
        };
        let config = PostgresConfig { host: "127.0.0.1".into(), port: server.port(), user: USER.into(), password: None, dbname: "postgres".into(), freeze_timeout: opts.freeze_timeout, server_control: Some(control) };
        let plugin = Arc::new(PostgresPlugin::new(config).map_err(|e| anyhow::anyhow!("{e}"))?);
        let orchestrator = crate::mariadb::MariaDbRig::orchestrator(&sim, opts.client_timeout, opts.seed)?;
        let app = stasis_core::domain::AppSpec { name: opts.app_name.clone(), kind: stasis_core::domain::AppKind::Postgres, svm: SVM.into(), volumes, freeze_timeout: opts.freeze_timeout };
        Ok(PgRig { server, plugin, orchestrator, app, wal_dir, sim })
    }

    pub fn plugin_dyn(&self) -> Arc<dyn stasis_core::plugin::AppPlugin> {
        self.plugin.clone()
    }

    /// Where a clone restore's data directory is mounted.
    pub fn clone_data_dir(&self, clone_volume: &str) -> PathBuf {
        self.sim.mounts().mount_point(&format!("/{clone_volume}")).join(DATA_SUBDIR)
    }
}

// ------------------------------------------------------------------ workload and checker

/// The table the writers fill: one row per acknowledged transaction.
pub const TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS acked (writer int NOT NULL, seq bigint NOT NULL, PRIMARY KEY (writer, seq))";

pub use crate::writers::{Ack, Writers};

/// A writer's connection: one autocommit `INSERT` per transaction; the server's transaction
/// id (`pg_current_xact_id()`) is what the checker finds the commit by in the WAL.
struct PgSink {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
}

#[async_trait::async_trait]
impl crate::writers::Sink for PgSink {
    async fn commit(&mut self, writer: i32, seq: i64) -> anyhow::Result<u64> {
        let row = self.client.query_one(&self.insert, &[&writer, &seq]).await?;
        Ok(row.get::<_, String>(0).parse()?)
    }
}

/// Start `count` writers (ids `first_writer..`) on the server at `port`, each on its own
/// connection; the table is created if needed.
pub async fn writers(port: u16, first_writer: i32, count: i32) -> anyhow::Result<Writers> {
    Ok(Writers::start(first_writer, sinks(port, count).await?))
}

/// `count` writer connections to the server at `port` (the table created if needed).
pub async fn sinks(port: u16, count: i32) -> anyhow::Result<Vec<Box<dyn crate::writers::Sink>>> {
    connect(port, START_WAIT_MAX).await?.batch_execute(TABLE_DDL).await.context("creating the table")?;
    let mut sinks: Vec<Box<dyn crate::writers::Sink>> = Vec::new();
    for _ in 0..count {
        let client = connect(port, START_WAIT_MAX).await?;
        let insert = client.prepare("INSERT INTO acked (writer, seq) VALUES ($1, $2) RETURNING pg_current_xact_id()::text").await?;
        sinks.push(Box::new(PgSink { client, insert }));
    }
    Ok(sinks)
}

/// The rows of a (restored) server, `(writer, seq)`.
pub async fn rows(client: &tokio_postgres::Client) -> anyhow::Result<std::collections::BTreeSet<(i32, i64)>> {
    Ok(client.query("SELECT writer, seq FROM acked", &[]).await.context("reading the restored rows")?.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// What a restore held, as the checker measured it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreCheck {
    pub rows: usize,
    /// Acknowledged transactions committed before the backup's consistency point.
    pub before_point: usize,
    /// The WAL position of the newest commit the restore holds (where its WAL ended).
    pub last_commit_lsn: u64,
    /// Acknowledged transactions committed after it (so the check could have failed).
    pub after_restore: usize,
}

/// The restore's rows must be exactly the acknowledged transactions whose commit records
/// come up to some WAL position E (no hole, nothing unacknowledged: an atomic image of data
/// and WAL replayed to its end), with E at or after the backup's consistency point `point_lsn`
/// (every transaction committed before `pg_backup_start`'s checkpoint is there), and no row
/// that was issued after the backup had finished (`backup_done`). Commit positions come from
/// the source server's WAL (`commit_lsns`), not from the restored copy.
pub fn check_restore(acks: &[Ack], commits: &HashMap<u64, u64>, rows: &std::collections::BTreeSet<(i32, i64)>, point_lsn: u64, backup_done: Instant) -> Result<RestoreCheck, String> {
    let mut by_row = HashMap::new();
    for a in acks {
        let lsn = *commits.get(&a.txid).ok_or_else(|| format!("acknowledged transaction {} (writer {}, row {}) has no commit record in the source's WAL", a.txid, a.writer, a.seq))?;
        by_row.insert((a.writer, a.seq), (lsn, a.issued));
    }
    let mut last = 0;
    for row in rows {
        let (lsn, issued) = by_row.get(row).ok_or_else(|| format!("row {row:?} is in the restore but no writer saw it acknowledged"))?;
        if *issued > backup_done {
            return Err(format!("row {row:?} was issued after the backup had finished, yet it is in the restore"));
        }
        last = last.max(*lsn);
    }
    let mut check = RestoreCheck { rows: rows.len(), before_point: 0, last_commit_lsn: last, after_restore: 0 };
    let mut missing = Vec::new();
    for (row, (lsn, _)) in &by_row {
        if *lsn < point_lsn {
            check.before_point += 1;
        }
        if *lsn > last {
            check.after_restore += 1;
        } else if !rows.contains(row) {
            missing.push((*lsn, *row));
        }
    }
    missing.sort();
    if let Some((lsn, row)) = missing.first() {
        let before = if *lsn < point_lsn { ", before the backup's consistency point" } else { "" };
        return Err(format!("{} acknowledged rows committed before the restore's newest commit ({}) are missing, first {row:?} committed at {}{before}", missing.len(), lsn_text(last), lsn_text(*lsn)));
    }
    if last < point_lsn && check.before_point > 0 {
        return Err(format!("the restore ends at {} before the backup's consistency point {}", lsn_text(last), lsn_text(point_lsn)));
    }
    Ok(check)
}

pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text() {
        assert_eq!(parse_lsn("0/3000028"), Some(0x3000028));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("nonsense"), None);
    }
}
