//! PostgreSQL over `tokio-postgres`.
//!
//! # Quiesce
//! One dedicated connection is held from quiesce to thaw: `pg_backup_start(label, true)`
//! (non-exclusive, fast checkpoint) belongs to that session, and PostgreSQL aborts the
//! backup by itself if the session dies. The session's `statement_timeout` is the freeze
//! bound, so a checkpoint stuck behind I/O cannot hold the freeze open. The thaw is
//! `pg_backup_stop(false)` on the same session.
//!
//! PostgreSQL does not fence commits: the snapshot is consistent because it is atomic
//! across the data directory *and* the WAL (the WAL on the same volume, or on a second
//! volume of the same consistency group), so the restored cluster replays its WAL as after
//! a power loss. What the backup start buys is a known point: the consistency point is the
//! redo location of the checkpoint `pg_backup_start` made (`redo=<lsn>`): every
//! transaction committed before it is in the snapshot, and replay starts there.
//!
//! # Recovery
//! `recover` reads the restored copy's control file (`pg_controldata`, the configured
//! `controldata_command`): its latest checkpoint's redo location is the recovered point, so
//! a snapshot taken outside the backup window does not match the backup's point. It then
//! starts a private server on the copy (`instance_command`, on a free loopback port; the
//! copy's stale `postmaster.pid` removed and, with the WAL on a second volume, `pg_wal`
//! pointed at that volume's restored copy), waits until it accepts connections and has left
//! recovery, checks every database answers, and shuts it down (fast shutdown).
//!
//! Credentials are a [`SecretString`]; names reach the server only as connection
//! parameters or bound parameters, never in SQL text.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::{Client, NoTls};

use crate::domain::ConsistencyPoint;
use crate::plugin::{AppPlugin, PluginError, RecoveryReport, RecoveryTarget};

/// Longest a connection attempt may take.
const CONNECT_WAIT_MAX: Duration = Duration::from_secs(3);
/// Longest a thaw statement may take.
const STATEMENT_WAIT_MAX: Duration = Duration::from_secs(5);
/// How often `stop`, `start` and `recover` look at whether a server answers.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Lines of a failed recovery instance's log quoted in the error.
const LOG_TAIL_LINES: usize = 5;
/// Longest a control command (`pg_controldata`, stop, start) may run.
const COMMAND_WAIT_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<SecretString>,
    pub dbname: String,
    /// The app's freeze bound: the lock session's `statement_timeout`.
    pub freeze_timeout: Duration,
    pub server_control: Option<ServerControl>,
}

/// How the plugin stops, starts and opens a server on restored data. Argument vectors.
#[derive(Debug, Clone)]
pub struct ServerControl {
    pub stop_command: Vec<String>,
    pub start_command: Vec<String>,
    /// Where this host sees the array's volumes by junction path.
    pub mount_root: PathBuf,
    /// The data directory inside the first volume.
    pub data_subdir: PathBuf,
    /// With the WAL on a second volume: the WAL directory inside it.
    pub wal_subdir: Option<PathBuf>,
    /// Runs a private server in the foreground; placeholders `{datadir}` and `{port}`.
    pub instance_command: Vec<String>,
    /// Prints the control file of `{datadir}` (`pg_controldata -D {datadir}`).
    pub controldata_command: Vec<String>,
    pub start_wait: Duration,
}

pub struct PostgresPlugin {
    config: PostgresConfig,
    /// The session that holds the backup start, until the thaw.
    held: tokio::sync::Mutex<Option<Client>>,
}

fn app_error(context: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::App(format!("{context}: {e}"))
}

/// The `Latest checkpoint's REDO location` and `Database cluster state` of `pg_controldata` output.
pub fn parse_controldata(text: &str) -> Option<(String, String)> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_string()));
    Some((field("Latest checkpoint's REDO location")?, field("Database cluster state")?))
}

pub fn point(redo_lsn: &str) -> ConsistencyPoint {
    ConsistencyPoint(format!("redo={redo_lsn}"))
}

fn fill(argv: &[String], datadir: &Path, port: u16) -> Vec<String> {
    argv.iter().map(|a| a.replace("{datadir}", &datadir.to_string_lossy()).replace("{port}", &port.to_string())).collect()
}

async fn run_command(what: &str, argv: &[String]) -> Result<String, PluginError> {
    let (program, args) = argv.split_first().ok_or_else(|| PluginError::App(format!("postgres: {what} command is empty")))?;
    let run = tokio::process::Command::new(program).args(args).stdin(Stdio::null()).kill_on_drop(true).output();
    let out = tokio::time::timeout(COMMAND_WAIT_MAX, run).await.map_err(|_| PluginError::App(format!("postgres: {what} did not finish within {COMMAND_WAIT_MAX:?}")))?.map_err(|e| app_error(&format!("postgres: starting {what}"), e))?;
    if !out.status.success() {
        return Err(PluginError::App(format!("postgres: {what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl PostgresPlugin {
    pub fn new(config: PostgresConfig) -> Result<Self, PluginError> {
        if config.host.is_empty() || config.user.is_empty() || config.dbname.is_empty() {
            return Err(PluginError::App("postgres: host, user and dbname must be set".into()));
        }
        if let Some(c) = &config.server_control {
            for (name, argv) in [("stop_command", &c.stop_command), ("start_command", &c.start_command), ("instance_command", &c.instance_command), ("controldata_command", &c.controldata_command)] {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(PluginError::App(format!("postgres: server_control.{name} is empty")));
                }
            }
        }
        Ok(PostgresPlugin { config, held: tokio::sync::Mutex::new(None) })
    }

    async fn connect_to(&self, port: u16, dbname: &str) -> Result<Client, PluginError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.config.host).port(port).user(&self.config.user).dbname(dbname).connect_timeout(CONNECT_WAIT_MAX).application_name("stasis");
        if let Some(pw) = &self.config.password {
            cfg.password(pw.expose_secret());
        }
        let (client, connection) = tokio::time::timeout(CONNECT_WAIT_MAX, cfg.connect(NoTls)).await.map_err(|_| PluginError::App(format!("postgres: connecting to port {port} timed out")))?.map_err(|e| app_error("postgres: connecting", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        Ok(client)
    }

    async fn answers(&self, port: u16) -> bool {
        self.connect_to(port, &self.config.dbname).await.is_ok()
    }

    async fn wait_until(&self, port: u16, answering: bool, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.answers(port).await == answering {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn control(&self) -> Result<&ServerControl, PluginError> {
        self.config.server_control.as_ref().ok_or_else(|| PluginError::App("postgres: no server_control configured: stop, start and recovery need it".into()))
    }

    /// Open the restored copy on a private server, check it, shut it down.
    async fn open_copy(&self, control: &ServerControl, datadir: &Path) -> Result<String, PluginError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| app_error("postgres: finding a free port", e))?.port();
        let argv = fill(&control.instance_command, datadir, port);
        let mut child = tokio::process::Command::new(&argv[0]).args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().map_err(|e| app_error("postgres: starting the recovery instance", e))?;
        let result = async {
            let deadline = Instant::now() + control.start_wait;
            let client = loop {
                if let Ok(c) = self.connect_to(port, &self.config.dbname).await {
                    if let Ok(row) = c.query_one("SELECT pg_is_in_recovery()", &[]).await {
                        if !row.get::<_, bool>(0) {
                            break c;
                        }
                    }
                }
                if let Ok(Some(status)) = child.try_wait() {
                    // It exited: its stderr (the server log) is complete; the tail says why.
                    let mut log = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        use tokio::io::AsyncReadExt;
                        let _ = stderr.read_to_string(&mut log).await;
                    }
                    let tail: Vec<&str> = log.lines().rev().take(LOG_TAIL_LINES).collect::<Vec<_>>().into_iter().rev().collect();
                    return Err(PluginError::Verification(format!("postgres: the recovery instance exited ({status}) before it accepted connections: {}", tail.join(" | "))));
                }
                if Instant::now() >= deadline {
                    return Err(PluginError::Verification(format!("postgres: the restored copy did not open within {:?}", control.start_wait)));
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            };
            let databases: Vec<String> = client.query("SELECT datname FROM pg_database WHERE datallowconn", &[]).await.map_err(|e| app_error("postgres: listing databases", e))?.iter().map(|r| r.get(0)).collect();
            for db in &databases {
                let c = self.connect_to(port, db).await?;
                c.simple_query("SELECT 1").await.map_err(|e| PluginError::Verification(format!("postgres: database {db:?} of the restored copy does not answer: {e}")))?;
            }
            Ok(format!("opened on port {port}; {} databases answer", databases.len()))
        }
        .await;
        // Fast shutdown (SIGINT), then wait; kill_on_drop covers a hang.
        if let Some(pid) = child.id() {
            let _ = tokio::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().await;
        }
        if tokio::time::timeout(control.start_wait, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
        result
    }

    fn volume_dir(control: &ServerControl, volume: &crate::storage::VolumeInfo) -> Result<PathBuf, PluginError> {
        let junction = volume.junction_path.as_deref().ok_or_else(|| PluginError::App(format!("postgres: restored volume {} has no junction path, so it is not mounted", volume.name)))?;
        Ok(control.mount_root.join(junction.trim_start_matches('/')))
    }
}

#[async_trait]
impl AppPlugin for PostgresPlugin {
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        let mut held = self.held.lock().await;
        *held = None;
        let client = self.connect_to(self.config.port, &self.config.dbname).await?;
        let bound_ms = self.config.freeze_timeout.as_millis().max(1).to_string();
        // SET takes no parameters; the value is our own number, not input.
        client.batch_execute(&format!("SET statement_timeout = {bound_ms}")).await.map_err(|e| app_error("postgres: setting statement_timeout", e))?;
        let row = client.query_one("SELECT pg_backup_start($1, true)::text", &[&"stasis"]).await.map_err(|e| app_error("postgres: pg_backup_start", e))?;
        let lsn: String = row.get(0);
        *held = Some(client);
        Ok(point(&lsn))
    }

    async fn unquiesce(&self) -> Result<(), PluginError> {
        let Some(client) = self.held.lock().await.take() else { return Ok(()) };
        if client.is_closed() {
            return Err(PluginError::SessionLost("postgres: the backup session closed before the thaw; PostgreSQL aborted the backup".into()));
        }
        match tokio::time::timeout(STATEMENT_WAIT_MAX, client.query_one("SELECT lsn::text FROM pg_backup_stop(false)", &[])).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if client.is_closed() => Err(PluginError::SessionLost(format!("postgres: pg_backup_stop: {e}"))),
            Ok(Err(e)) => Err(app_error("postgres: pg_backup_stop", e)),
            // Dropping the client closes the session: the server aborts the backup.
            Err(_) => Err(PluginError::SessionLost(format!("postgres: pg_backup_stop took longer than {STATEMENT_WAIT_MAX:?}; the session was closed"))),
        }
    }

    async fn stop(&self) -> Result<(), PluginError> {
        let control = self.control()?;
        run_command("stop_command", &control.stop_command).await?;
        if !self.wait_until(self.config.port, false, control.start_wait).await {
            return Err(PluginError::App(format!("postgres: the server still answers {:?} after the stop command", control.start_wait)));
        }
        Ok(())
    }

    async fn start(&self) -> Result<(), PluginError> {
        let control = self.control()?;
        run_command("start_command", &control.start_command).await?;
        if !self.wait_until(self.config.port, true, control.start_wait).await {
            return Err(PluginError::App(format!("postgres: the server does not answer {:?} after the start command", control.start_wait)));
        }
        Ok(())
    }

    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        let control = self.control()?;
        let first = target.volumes.first().ok_or_else(|| PluginError::App("postgres: nothing to recover".into()))?;
        let datadir = Self::volume_dir(control, first)?.join(&control.data_subdir);
        // A new clone is mounted by whoever mounts junction paths (NFS automount, the
        // simulator's mount manager): wait for it, bounded.
        let deadline = Instant::now() + control.start_wait;
        while !datadir.join("PG_VERSION").exists() && Instant::now() < deadline {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        // A copy of a running cluster holds its postmaster.pid: stale here.
        match std::fs::remove_file(datadir.join("postmaster.pid")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(app_error("postgres: removing the copy's postmaster.pid", e)),
        }
        if let (Some(wal_volume), Some(wal_subdir)) = (target.volumes.get(1), &control.wal_subdir) {
            // pg_wal is a symlink to the WAL volume: point it at this copy's WAL.
            let wal_dir = Self::volume_dir(control, wal_volume)?.join(wal_subdir);
            // The WAL clone is mounted on its own schedule too: a server started before it
            // appears finds no pg_wal and exits.
            while !wal_dir.is_dir() && Instant::now() < deadline {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            let link = datadir.join("pg_wal");
            std::fs::remove_file(&link).map_err(|e| app_error("postgres: replacing the pg_wal link", e))?;
            std::os::unix::fs::symlink(&wal_dir, &link).map_err(|e| app_error("postgres: linking pg_wal", e))?;
        }
        let controldata = run_command("controldata_command", &fill(&control.controldata_command, &datadir, 0)).await?;
        let (redo, state) = parse_controldata(&controldata).ok_or_else(|| PluginError::Verification("postgres: pg_controldata printed no REDO location or cluster state".into()))?;
        let opened = self.open_copy(control, &datadir).await?;
        Ok(RecoveryReport { needed_crash_recovery: state != "shut down", recovered_point: point(&redo), detail: format!("control file: redo {redo}, state {state:?}; {opened}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controldata_fields() {
        let text = "pg_control version number:            1300\nDatabase cluster state:               in production\nLatest checkpoint location:           0/3000060\nLatest checkpoint's REDO location:    0/3000028\n";
        assert_eq!(parse_controldata(text), Some(("0/3000028".into(), "in production".into())));
        assert_eq!(parse_controldata("nothing"), None);
    }

    #[test]
    fn configuration_is_checked() {
        let config = PostgresConfig { host: "127.0.0.1".into(), port: 5432, user: String::new(), password: None, dbname: "postgres".into(), freeze_timeout: Duration::from_secs(5), server_control: None };
        assert!(PostgresPlugin::new(config).is_err());
    }
}
