//! MySQL and MariaDB over `mysql_async`.
//!
//! # Lock protocol
//! Quiesce opens one dedicated connection and keeps it until the thaw: every backup lock in
//! MySQL and MariaDB belongs to a session, so the server drops the lock by itself if that
//! session dies (orchestrator crash, network loss, `KILL`). The statements, by server:
//!
//! | server            | freeze                                              | thaw                                 |
//! |-------------------|-----------------------------------------------------|--------------------------------------|
//! | MariaDB >= 10.4.1 | `BACKUP STAGE START`, `BACKUP STAGE BLOCK_COMMIT`   | `BACKUP STAGE END`                   |
//! | MySQL >= 8.0      | `LOCK INSTANCE FOR BACKUP`, `FLUSH TABLES WITH READ LOCK` | `UNLOCK TABLES`, `UNLOCK INSTANCE` |
//! | older             | `FLUSH TABLES WITH READ LOCK`                        | `UNLOCK TABLES`                      |
//!
//! Before the freeze the session sets `lock_wait_timeout` (a lock request stuck behind a
//! long statement fails with error 1205 instead of holding the freeze open) and
//! `wait_timeout` just above the freeze bound (if the orchestrator hangs while holding the
//! lock, the server closes the idle session, and with it the lock). The client also bounds
//! the lock request itself and, past that bound, kills the session from a second
//! connection (`KILL CONNECTION <id>`): a dropped socket alone is not noticed by a server
//! thread that is waiting for a lock.
//!
//! Under the lock the plugin reads the consistency point: `@@gtid_binlog_pos` (MariaDB) or
//! `@@GLOBAL.gtid_executed` (MySQL), and the binary log file and position. The point is
//! `gtid=<set>;binlog=<file>:<position>`; a server started on a snapshot taken under the
//! lock reports the same point: the same GTID set, and the file that was current at the
//! lock ending exactly at that position (the restarted server opens a new file).
//!
//! # Recovery
//! `recover` starts a private server (the configured `instance_command`) on the restored
//! volume's data directory, on a free loopback port with its own run directory, waits until
//! it accepts connections, runs `CHECK TABLE` and `CHECKSUM TABLE` on every user table,
//! reads the recovered point, tells from that server's error log whether crash recovery
//! ran, and shuts it down cleanly. In place, `start` then starts the production server.
//!
//! Credentials are a [`SecretString`] and never formatted; identifiers reach SQL text only
//! through [`quote_identifier`], values only as bound parameters or through [`quote_string`]
//! where the statement has no placeholders.

use std::path::{Path, PathBuf};
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::ConsistencyPoint;
use crate::plugin::{AppPlugin, PluginError, RecoveryReport, RecoveryTarget};

/// Longest a connection attempt may take.
const CONNECT_WAIT_MAX: Duration = Duration::from_secs(3);
/// How much longer than `lock_wait_timeout` the client waits for a lock before it kills the
/// session itself (the server's own timeout should have answered by then).
const LOCK_CLIENT_MARGIN: Duration = Duration::from_millis(250);
/// Longest a thaw statement or a `KILL` may take.
const STATEMENT_WAIT_MAX: Duration = Duration::from_secs(2);
/// How often `stop`, `start` and `recover` look at whether a server answers.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Schemas that belong to the server, not to the application (not checked).
const SYSTEM_SCHEMAS: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

/// How to reach and, optionally, run the server. Build it from the app's config and hand it
/// to [`MysqlPlugin::new`].
#[derive(Debug, Clone)]
pub struct MysqlConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: SecretString,
    /// The app's freeze bound (the same as `AppSpec::freeze_timeout`): the lock session's
    /// `wait_timeout` is set just above it.
    pub freeze_timeout: Duration,
    /// How long a lock request may wait behind other statements (whole seconds on the
    /// server, at least 1 s); must be below `freeze_timeout`.
    pub lock_wait_timeout: Duration,
    /// Stop, start and recovery. Without it `stop` refuses while the server answers, and
    /// `recover` cannot run (restores need it).
    pub server_control: Option<ServerControl>,
}

/// How the plugin stops, starts and opens a server on restored data. Commands are argument
/// vectors, run without a shell.
#[derive(Debug, Clone)]
pub struct ServerControl {
    /// Stops the production server cleanly (e.g. `["systemctl", "stop", "mariadb"]`). The
    /// plugin then waits until the server no longer answers. Empty: the plugin stops
    /// nothing, and refuses an in-place restore while the server answers.
    pub stop_command: Vec<String>,
    /// Starts it again. May run in the foreground (it is left running) or return at once;
    /// the plugin waits until the server answers. Empty: the operator starts it.
    pub start_command: Vec<String>,
    /// Where this host sees the array's volumes: a volume with junction path `/j` is at
    /// `<mount_root>/j` (an NFS mount per volume, or `ontap-sim serve --mount-root`).
    pub mount_root: PathBuf,
    /// The data directory inside the first volume (empty: the volume's root).
    pub data_subdir: PathBuf,
    /// Starts a private server on a restored copy, with placeholders `{datadir}`, `{port}`
    /// (a free loopback port) and `{run_dir}` (a fresh private directory for its socket and
    /// pid file; its error log must be `{run_dir}/error.log`).
    pub instance_command: Vec<String>,
    /// Bound on each wait for a server to stop, start or accept connections.
    pub start_wait: Duration,
}

/// Which statements freeze and thaw this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockProtocol {
    /// MariaDB 10.4.1 and later.
    BackupStage,
    /// MySQL 8.0 and later: the instance backup lock plus the global read lock.
    InstanceLockAndFtwrl,
    /// Anything older: the global read lock alone.
    Ftwrl,
}

impl LockProtocol {
    /// Choose by `@@version` (`10.11.6-MariaDB-...`, `8.0.36`, `5.7.44-log`).
    pub fn for_version(version: &str) -> LockProtocol {
        let numbers: Vec<u32> = version.split(|c: char| !c.is_ascii_digit()).take(3).map(|n| n.parse().unwrap_or(0)).collect();
        let (major, minor, patch) = (numbers.first().copied().unwrap_or(0), numbers.get(1).copied().unwrap_or(0), numbers.get(2).copied().unwrap_or(0));
        if version.to_ascii_lowercase().contains("mariadb") {
            if (major, minor, patch) >= (10, 4, 1) {
                LockProtocol::BackupStage
            } else {
                LockProtocol::Ftwrl
            }
        } else if major >= 8 {
            LockProtocol::InstanceLockAndFtwrl
        } else {
            LockProtocol::Ftwrl
        }
    }

    pub fn freeze_statements(self) -> &'static [&'static str] {
        match self {
            LockProtocol::BackupStage => &["BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT"],
            LockProtocol::InstanceLockAndFtwrl => &["LOCK INSTANCE FOR BACKUP", "FLUSH TABLES WITH READ LOCK"],
            LockProtocol::Ftwrl => &["FLUSH TABLES WITH READ LOCK"],
        }
    }

    pub fn thaw_statements(self) -> &'static [&'static str] {
        match self {
            LockProtocol::BackupStage => &["BACKUP STAGE END"],
            LockProtocol::InstanceLockAndFtwrl => &["UNLOCK TABLES", "UNLOCK INSTANCE"],
            LockProtocol::Ftwrl => &["UNLOCK TABLES"],
        }
    }
}

/// `name` as a quoted identifier: backticks around, backticks inside doubled.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `value` as a quoted string literal, for the few statements that take no placeholders
/// (`CREATE USER ... IDENTIFIED BY`). Safe with the default `sql_mode` and with
/// `NO_BACKSLASH_ESCAPES` alike: quotes are doubled, backslashes and NULs escaped.
pub fn quote_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The session that holds (or asked for) the lock.
struct Held {
    conn: Conn,
    protocol: LockProtocol,
}

#[derive(Default)]
struct LockState {
    /// Connection id of the session that asked for the lock, until a thaw succeeds: if a
    /// quiesce was abandoned half-way, the thaw kills this session.
    session_id: Option<u32>,
    /// Set when the lock session was found dead: every thaw reports it until the next quiesce.
    lost: Option<String>,
}

/// The MySQL/MariaDB [`AppPlugin`].
pub struct MysqlPlugin {
    config: MysqlConfig,
    held: tokio::sync::Mutex<Option<Held>>,
    state: StdMutex<LockState>,
}

fn app_error(context: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::App(format!("{context}: {e}"))
}

/// A dead connection (I/O error, closed by the server) rather than an SQL error.
fn is_session_error(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        // 1927: connection was killed; 2006/2013: server gone / lost connection.
        mysql_async::Error::Server(s) => matches!(s.code, 1927 | 2006 | 2013),
        _ => false,
    }
}

impl MysqlPlugin {
    /// A plugin for the server `config` describes. Checks the configuration; connects to
    /// nothing yet.
    pub fn new(config: MysqlConfig) -> Result<MysqlPlugin, PluginError> {
        if config.lock_wait_timeout >= config.freeze_timeout {
            return Err(PluginError::App(format!(
                "mysql: lock_wait_timeout ({:?}) must be shorter than the freeze timeout ({:?})",
                config.lock_wait_timeout, config.freeze_timeout
            )));
        }
        if config.host.is_empty() || config.user.is_empty() {
            return Err(PluginError::App("mysql: host and user must be set".into()));
        }
        if let Some(control) = &config.server_control {
            if control.instance_command.first().is_none_or(|a| a.is_empty()) {
                return Err(PluginError::App("mysql: server_control.instance_command is empty".into()));
            }
            // Stop and start go together: a server stopped by stasis must be started by it.
            for (name, argv) in [("stop_command", &control.stop_command), ("start_command", &control.start_command)] {
                if argv.first().is_some_and(|a| a.is_empty()) {
                    return Err(PluginError::App(format!("mysql: server_control.{name} starts with an empty program name")));
                }
            }
            if control.stop_command.is_empty() != control.start_command.is_empty() {
                return Err(PluginError::App("mysql: give both server_control.stop_command and start_command, or neither".into()));
            }
        }
        Ok(MysqlPlugin { config, held: tokio::sync::Mutex::new(None), state: StdMutex::new(LockState::default()) })
    }

    pub fn config(&self) -> &MysqlConfig {
        &self.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn opts_for(&self, host: &str, port: u16) -> OptsBuilder {
        OptsBuilder::default()
            .ip_or_hostname(host.to_string())
            .tcp_port(port)
            .user(Some(self.config.user.clone()))
            .pass(Some(self.config.password.expose_secret().to_string()))
            .prefer_socket(false)
            // Known up front, so the driver sends no `SELECT @@max_allowed_packet, ...`.
            .max_allowed_packet(Some(16 << 20))
            .wait_timeout(Some(28800))
            .stmt_cache_size(0)
    }

    async fn connect_to(&self, host: &str, port: u16) -> Result<Conn, mysql_async::Error> {
        match tokio::time::timeout(CONNECT_WAIT_MAX, Conn::new(self.opts_for(host, port))).await {
            Ok(r) => r,
            Err(_) => Err(mysql_async::Error::Other(format!("connecting to {host}:{port} took longer than {CONNECT_WAIT_MAX:?}").into())),
        }
    }

    async fn connect(&self) -> Result<Conn, PluginError> {
        self.connect_to(&self.config.host, self.config.port).await.map_err(|e| app_error(&format!("connecting to {}:{}", self.config.host, self.config.port), e))
    }

    /// Does the production server accept connections?
    pub async fn answers(&self) -> bool {
        match self.connect_to(&self.config.host, self.config.port).await {
            Ok(conn) => {
                let _ = conn.disconnect().await;
                true
            }
            Err(_) => false,
        }
    }

    /// End session `id` from a second connection, so that the server drops whatever lock it
    /// holds or waits for.
    async fn kill_session(&self, id: u32) -> Result<(), PluginError> {
        let mut conn = self.connect().await?;
        let result = tokio::time::timeout(STATEMENT_WAIT_MAX, conn.query_drop(format!("KILL CONNECTION {id}"))).await;
        let _ = conn.disconnect().await;
        match result {
            Ok(Ok(())) => Ok(()),
            // 1094: unknown thread id: the session is already gone, which is what we wanted.
            Ok(Err(mysql_async::Error::Server(e))) if e.code == 1094 => Ok(()),
            Ok(Err(e)) => Err(app_error(&format!("killing session {id}"), e)),
            Err(_) => Err(PluginError::App(format!("killing session {id} took longer than {STATEMENT_WAIT_MAX:?}"))),
        }
    }

    fn lock_wait_secs(&self) -> u64 {
        self.config.lock_wait_timeout.as_secs_f64().ceil().max(1.0) as u64
    }

    /// Ask for the lock and read the point on `conn` (whose id is already recorded).
    async fn freeze_on(&self, conn: &mut Conn, protocol: LockProtocol) -> Result<ConsistencyPoint, mysql_async::Error> {
        for statement in protocol.freeze_statements() {
            conn.query_drop(*statement).await?;
        }
        let gtid: Option<String> = match protocol {
            LockProtocol::BackupStage => conn.query_first("SELECT @@gtid_binlog_pos").await?,
            _ => conn.query_first("SELECT @@GLOBAL.gtid_executed").await?,
        };
        // MySQL 8.4 renamed it SHOW BINARY LOG STATUS (not supported here yet).
        let status: Option<Row> = conn.query_first("SHOW MASTER STATUS").await?;
        let binlog = status.and_then(|row| Some((row.get::<String, _>(0)?, row.get::<u64, _>(1)?)));
        Ok(point(gtid.unwrap_or_default().as_str(), binlog.as_ref().map(|(f, p)| (f.as_str(), *p))))
    }

    async fn run_command(&self, what: &str, argv: &[String], wait: Duration) -> Result<(), PluginError> {
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| app_error(&format!("running the {what} {:?}", argv[0]), e))?;
        let status = match tokio::time::timeout(wait, child.wait()).await {
            Ok(status) => status.map_err(|e| app_error(&format!("waiting for the {what}"), e))?,
            Err(_) => return Err(PluginError::App(format!("the {what} {:?} did not finish within {wait:?}; killed", argv[0]))),
        };
        if !status.success() {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = err.read_to_string(&mut stderr).await;
            }
            return Err(PluginError::App(format!("the {what} {:?} failed ({status}): {}", argv[0], stderr.trim())));
        }
        Ok(())
    }

    fn control(&self, what: &str) -> Result<&ServerControl, PluginError> {
        self.config.server_control.as_ref().ok_or_else(|| PluginError::App(format!("mysql: cannot {what}: no server_control (stop_command, start_command, instance_command) configured")))
    }

    /// Where the restored copy's data directory is on this host.
    fn data_dir_of(&self, control: &ServerControl, target: &RecoveryTarget) -> Result<PathBuf, PluginError> {
        let volume = target.volumes.first().ok_or_else(|| PluginError::App("recover: no volume given".into()))?;
        let junction = volume.junction_path.as_deref().ok_or_else(|| PluginError::App(format!("recover: volume {} has no junction path, so this host cannot reach its data", volume.name)))?;
        Ok(control.mount_root.join(junction.trim_start_matches('/')).join(&control.data_subdir))
    }

    async fn verify(&self, conn: &mut Conn) -> Result<(Vec<String>, Vec<String>), PluginError> {
        let tables: Vec<(String, String)> = conn
            .exec(
                format!(
                    "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ({}) ORDER BY TABLE_SCHEMA, TABLE_NAME",
                    SYSTEM_SCHEMAS.iter().map(|_| "?").collect::<Vec<_>>().join(", ")
                ),
                SYSTEM_SCHEMAS.to_vec(),
            )
            .await
            .map_err(|e| app_error("listing tables", e))?;
        let mut problems = Vec::new();
        let mut checksums = Vec::new();
        for (schema, table) in tables {
            let name = format!("{}.{}", quote_identifier(&schema), quote_identifier(&table));
            // Rows: Table, Op, Msg_type, Msg_text. Anything but one `status OK` is a finding.
            let rows: Vec<(String, String, String, String)> = conn.query(format!("CHECK TABLE {name}")).await.map_err(|e| app_error(&format!("CHECK TABLE {schema}.{table}"), e))?;
            let ok = rows.iter().any(|r| r.2 == "status" && r.3 == "OK") && !rows.iter().any(|r| r.2 == "error" || r.2 == "warning");
            if !ok {
                problems.push(format!("{schema}.{table}: {}", rows.iter().map(|r| format!("{} {}", r.2, r.3)).collect::<Vec<_>>().join("; ")));
                continue;
            }
            let sum: Option<(String, Option<u64>)> = conn.query_first(format!("CHECKSUM TABLE {name}")).await.map_err(|e| app_error(&format!("CHECKSUM TABLE {schema}.{table}"), e))?;
            checksums.push(format!("{schema}.{table}={}", sum.and_then(|s| s.1).map_or("null".into(), |c| c.to_string())));
        }
        Ok((problems, checksums))
    }

    /// Check a server that something else started on restored data (a Kubernetes pod, reached
    /// at the configured host and port): the same table checks and recovered point as
    /// [`AppPlugin::recover`], with crash recovery read from `error_log` (the server's log as
    /// its platform keeps it).
    pub async fn verify_running(&self, error_log: &str) -> Result<RecoveryReport, PluginError> {
        let mut conn = self.connect().await?;
        let checked = async {
            let version: Option<String> = conn.query_first("SELECT @@version").await.map_err(|e| app_error("reading the server version", e))?;
            let protocol = LockProtocol::for_version(version.as_deref().unwrap_or_default());
            let point = self.recovered_point(&mut conn, protocol).await?;
            let (problems, checksums) = self.verify(&mut conn).await?;
            Ok::<_, PluginError>((point, problems, checksums))
        }
        .await;
        let _ = conn.disconnect().await;
        let (recovered_point, problems, checksums) = checked?;
        if !problems.is_empty() {
            return Err(PluginError::Verification(format!("CHECK TABLE found {} table(s) damaged or not closed properly: {}", problems.len(), problems.join(" | "))));
        }
        Ok(RecoveryReport {
            needed_crash_recovery: crash_recovery_ran(error_log),
            recovered_point,
            detail: format!("{} table(s) checked OK; checksums: {}", checksums.len(), checksums.join(", ")),
        })
    }

    /// The recovered server's point: its GTID set, and where the binary log that was
    /// current when the snapshot was taken ends (the restarted server opened a newer one).
    async fn recovered_point(&self, conn: &mut Conn, protocol: LockProtocol) -> Result<ConsistencyPoint, PluginError> {
        let gtid: Option<String> = match protocol {
            LockProtocol::BackupStage => conn.query_first("SELECT @@gtid_binlog_pos").await,
            _ => conn.query_first("SELECT @@GLOBAL.gtid_executed").await,
        }
        .map_err(|e| app_error("reading the GTID position", e))?;
        let logs: Vec<Row> = conn.query("SHOW BINARY LOGS").await.unwrap_or_default();
        let logs: Vec<(String, u64)> = logs.into_iter().filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1)?))).collect();
        let before_restart = match logs.as_slice() {
            [.., previous, _current] => Some((previous.0.as_str(), end_before_stop_event(conn, &previous.0, previous.1).await)),
            _ => None,
        };
        Ok(point(gtid.unwrap_or_default().as_str(), before_restart))
    }
}

/// Where binary log `file` (`size` bytes) ended before a trailing Stop event. A clean
/// shutdown appends one (no transaction, no GTID): a copy taken after the lock and a clean
/// stop (a planned switch-over) must report the position the lock read, not the Stop event's
/// end. A Stop event is a bare header (19 bytes) plus the CRC32 checksum when checksums are
/// on; anything else at that offset (or no event boundary there) leaves `size`.
async fn end_before_stop_event(conn: &mut Conn, file: &str, size: u64) -> u64 {
    const EVENT_HEADER_LEN: u64 = 19;
    const CHECKSUM_LEN: u64 = 4;
    // A log file name from the server itself, checked anyway before it goes into SQL text.
    if file.is_empty() || !file.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return size;
    }
    let checksum: Option<String> = conn.query_first("SELECT @@binlog_checksum").await.ok().flatten();
    let stop_len = EVENT_HEADER_LEN + if checksum.as_deref().is_some_and(|c| !c.eq_ignore_ascii_case("NONE")) { CHECKSUM_LEN } else { 0 };
    let Some(start) = size.checked_sub(stop_len) else { return size };
    // Columns: Log_name, Pos, Event_type, Server_id, End_log_pos, Info.
    let event: Option<Row> = conn.query_first(format!("SHOW BINLOG EVENTS IN '{file}' FROM {start} LIMIT 1")).await.unwrap_or(None);
    let is_stop = event.is_some_and(|row| row.get_opt::<String, _>(2).and_then(Result::ok).as_deref() == Some("Stop") && row.get_opt::<u64, _>(4).and_then(Result::ok) == Some(size));
    if is_stop {
        start
    } else {
        size
    }
}

/// `gtid=<set>;binlog=<file>:<pos>` (the binlog part only when the binary log is on).
pub fn point(gtid: &str, binlog: Option<(&str, u64)>) -> ConsistencyPoint {
    match binlog {
        Some((file, position)) => ConsistencyPoint(format!("gtid={gtid};binlog={file}:{position}")),
        None => ConsistencyPoint(format!("gtid={gtid}")),
    }
}

/// The GTID set of a point made by [`point`].
pub fn gtid_of(point: &ConsistencyPoint) -> &str {
    point.0.strip_prefix("gtid=").map(|rest| rest.split(';').next().unwrap_or("")).unwrap_or("")
}

/// A private server on a restored copy; killed if dropped before its clean shutdown.
struct Instance {
    child: tokio::process::Child,
    port: u16,
    run_dir: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn free_port() -> Result<u16, PluginError> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| app_error("finding a free port", e))
}

fn private_run_dir() -> Result<PathBuf, PluginError> {
    let dir = std::env::temp_dir().join(format!("stasis-mysql-recover-{}-{:016x}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&dir).map_err(|e| app_error(&format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

fn substitute(argv: &[String], data_dir: &Path, port: u16, run_dir: &Path) -> Vec<String> {
    argv.iter()
        .map(|a| a.replace("{datadir}", &data_dir.to_string_lossy()).replace("{port}", &port.to_string()).replace("{run_dir}", &run_dir.to_string_lossy()))
        .collect()
}

/// Lines in MariaDB's and MySQL's error log that mean a journal was replayed at start.
pub fn crash_recovery_ran(error_log: &str) -> bool {
    const MARKERS: [&str; 5] = ["Starting crash recovery", "Aria engine: starting recovery", "Recovering after a crash", "Starting final batch to recover", "InnoDB: Apply batch completed"];
    MARKERS.iter().any(|m| error_log.contains(m))
}

impl MysqlPlugin {
    async fn start_instance(&self, control: &ServerControl, data_dir: &Path) -> Result<(Instance, Conn), PluginError> {
        let run_dir = private_run_dir()?;
        let port = free_port()?;
        let argv = substitute(&control.instance_command, data_dir, port, &run_dir);
        tracing::info!(data_dir = %data_dir.display(), port, "starting a private server on the restored data");
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| app_error(&format!("starting {:?}", argv[0]), e))?;
        let mut instance = Instance { child, port, run_dir };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = instance.child.try_wait() {
                let log = std::fs::read_to_string(instance.run_dir.join("error.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
                return Err(PluginError::Verification(format!("the server on the restored data exited ({status}) before accepting connections:\n{}", tail.join("\n"))));
            }
            if let Ok(conn) = self.connect_to("127.0.0.1", instance.port).await {
                return Ok((instance, conn));
            }
            if started.elapsed() > control.start_wait {
                return Err(PluginError::Verification(format!("the server on the restored data did not accept connections within {:?}", control.start_wait)));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn stop_instance(&self, mut instance: Instance, mut conn: Conn, wait: Duration) -> Result<String, PluginError> {
        let _ = conn.query_drop("SHUTDOWN").await;
        let _ = conn.disconnect().await;
        match tokio::time::timeout(wait, instance.child.wait()).await {
            Ok(_) => Ok(std::fs::read_to_string(instance.run_dir.join("error.log")).unwrap_or_default()),
            Err(_) => Err(PluginError::App(format!("the server on the restored data did not shut down within {wait:?}; killed"))),
        }
    }

    async fn wait_until(&self, answering: bool, wait: Duration) -> bool {
        let started = Instant::now();
        loop {
            if self.answers().await == answering {
                return true;
            }
            if started.elapsed() > wait {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

#[async_trait]
impl AppPlugin for MysqlPlugin {
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        let mut conn = self.connect().await?;
        let version: Option<String> = conn.query_first("SELECT @@version").await.map_err(|e| app_error("reading the server version", e))?;
        let protocol = LockProtocol::for_version(version.as_deref().unwrap_or_default());
        // The session's own bounds: lock waits, and idle time while holding the lock.
        let wait_secs = self.config.freeze_timeout.as_secs_f64().ceil() as u64 + 1;
        conn.query_drop(format!("SET SESSION lock_wait_timeout = {}, SESSION wait_timeout = {wait_secs}", self.lock_wait_secs()))
            .await
            .map_err(|e| app_error("setting the session's timeouts", e))?;
        let id = conn.id();
        {
            let mut state = self.state();
            state.session_id = Some(id);
            state.lost = None;
        }
        let bound = Duration::from_secs(self.lock_wait_secs()) + LOCK_CLIENT_MARGIN;
        let result = tokio::time::timeout(bound, self.freeze_on(&mut conn, protocol)).await;
        match result {
            Ok(Ok(point)) => {
                tracing::debug!(?protocol, session = id, %point, "quiesced");
                *self.held.lock().await = Some(Held { conn, protocol });
                Ok(point)
            }
            Ok(Err(e)) => {
                let session_lost = is_session_error(&e);
                drop(conn);
                let _ = self.kill_session(id).await;
                self.state().session_id = None;
                if session_lost {
                    Err(PluginError::SessionLost(format!("the lock session ended while freezing: {e}")))
                } else {
                    Err(app_error("freezing", e))
                }
            }
            Err(_) => {
                drop(conn);
                let killed = self.kill_session(id).await;
                self.state().session_id = None;
                Err(PluginError::App(format!("the lock was not granted within {bound:?}; the session was killed{}", killed.err().map(|e| format!(" (kill failed: {e})")).unwrap_or_default())))
            }
        }
    }

    async fn unquiesce(&self) -> Result<(), PluginError> {
        let mut held = self.held.lock().await;
        if let Some(Held { mut conn, protocol }) = held.take() {
            let id = conn.id();
            let mut failure = None;
            for statement in protocol.thaw_statements() {
                match tokio::time::timeout(STATEMENT_WAIT_MAX, conn.query_drop(*statement)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        failure = Some(e.to_string());
                        break;
                    }
                    Err(_) => {
                        failure = Some(format!("{statement} took longer than {STATEMENT_WAIT_MAX:?}"));
                        break;
                    }
                }
            }
            match failure {
                None => {
                    let _ = tokio::time::timeout(STATEMENT_WAIT_MAX, conn.disconnect()).await;
                    self.state().session_id = None;
                    tracing::debug!(session = id, "thawed");
                    Ok(())
                }
                Some(why) => {
                    // Whatever happened, make sure the session (and its lock) is gone.
                    drop(conn);
                    let _ = self.kill_session(id).await;
                    let message = format!("the lock session {id} was lost before the thaw (the server released its lock): {why}");
                    let mut state = self.state();
                    state.session_id = None;
                    state.lost = Some(message.clone());
                    Err(PluginError::SessionLost(message))
                }
            }
        } else {
            drop(held);
            // A quiesce abandoned half-way (or still waiting): end its session.
            let pending = self.state().session_id;
            if let Some(id) = pending {
                self.kill_session(id).await?;
                self.state().session_id = None;
                tracing::warn!(session = id, "thaw ended a lock session that was still being set up");
            }
            match self.state().lost.clone() {
                Some(message) => Err(PluginError::SessionLost(message)),
                None => Ok(()),
            }
        }
    }

    async fn stop(&self) -> Result<(), PluginError> {
        match self.config.server_control.as_ref().filter(|c| !c.stop_command.is_empty()) {
            None => {
                if self.answers().await {
                    return Err(PluginError::App(format!(
                        "refusing to restore in place: the server at {}:{} still answers and no stop_command/start_command is configured; stop it first or configure them",
                        self.config.host, self.config.port
                    )));
                }
                Ok(())
            }
            Some(control) => {
                // The server stops answering long before it has written its last page: the
                // end of a shutdown is its pid file going away (when this host can see it).
                let pid_file = match self.connect().await {
                    Ok(mut conn) => {
                        let path: Option<String> = conn.query_first("SELECT @@pid_file").await.ok().flatten();
                        let _ = conn.disconnect().await;
                        path.map(PathBuf::from).filter(|p| p.is_file())
                    }
                    Err(_) => return Ok(()), // not running: nothing to stop
                };
                self.run_command("stop_command", &control.stop_command, control.start_wait).await?;
                if !self.wait_until(false, control.start_wait).await {
                    return Err(PluginError::App(format!("the server at {}:{} still answers {:?} after the stop_command", self.config.host, self.config.port, control.start_wait)));
                }
                let started = Instant::now();
                while let Some(path) = pid_file.as_ref().filter(|p| p.exists()) {
                    if started.elapsed() > control.start_wait {
                        return Err(PluginError::App(format!("the server's pid file {} is still there {:?} after the stop_command", path.display(), control.start_wait)));
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Ok(())
            }
        }
    }

    async fn start(&self) -> Result<(), PluginError> {
        if self.answers().await {
            return Ok(());
        }
        let control = self.control("start the server")?;
        let argv = &control.start_command;
        if argv.is_empty() {
            // Not told how: starting the production server is the operator's job.
            tracing::info!(host = %self.config.host, port = self.config.port, "no start_command configured: the server is left for the operator to start");
            return Ok(());
        }
        // Left running if it stays in the foreground (not killed on drop).
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| app_error(&format!("running the start_command {:?}", argv[0]), e))?;
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                if !status.success() {
                    return Err(PluginError::App(format!("the start_command {:?} failed ({status})", argv[0])));
                }
            }
            if self.answers().await {
                return Ok(());
            }
            if started.elapsed() > control.start_wait {
                return Err(PluginError::App(format!("the server at {}:{} did not answer within {:?} of the start_command", self.config.host, self.config.port, control.start_wait)));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        let control = self.control("recover")?;
        let data_dir = self.data_dir_of(control, target)?;
        // A fresh clone's mount may take a moment to appear (the mount follows the junction path).
        let started = Instant::now();
        while !data_dir.is_dir() {
            if started.elapsed() > control.start_wait {
                return Err(PluginError::App(format!("recover: the data directory {} did not appear within {:?}", data_dir.display(), control.start_wait)));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let (instance, mut conn) = self.start_instance(control, &data_dir).await?;
        let checked = async {
            let version: Option<String> = conn.query_first("SELECT @@version").await.map_err(|e| app_error("reading the server version", e))?;
            let protocol = LockProtocol::for_version(version.as_deref().unwrap_or_default());
            let point = self.recovered_point(&mut conn, protocol).await?;
            let (problems, checksums) = self.verify(&mut conn).await?;
            Ok::<_, PluginError>((point, problems, checksums))
        }
        .await;
        let error_log = self.stop_instance(instance, conn, control.start_wait).await?;
        let (recovered_point, problems, checksums) = checked?;
        if !problems.is_empty() {
            return Err(PluginError::Verification(format!("CHECK TABLE found {} table(s) damaged or not closed properly: {}", problems.len(), problems.join(" | "))));
        }
        Ok(RecoveryReport {
            needed_crash_recovery: crash_recovery_ran(&error_log),
            recovered_point,
            detail: format!("{} table(s) checked OK; checksums: {}", checksums.len(), checksums.join(", ")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_follows_the_server_version() {
        assert_eq!(LockProtocol::for_version("10.11.19-MariaDB-0+deb12u1"), LockProtocol::BackupStage);
        assert_eq!(LockProtocol::for_version("10.4.1-MariaDB"), LockProtocol::BackupStage);
        assert_eq!(LockProtocol::for_version("10.3.39-MariaDB"), LockProtocol::Ftwrl);
        assert_eq!(LockProtocol::for_version("8.0.36"), LockProtocol::InstanceLockAndFtwrl);
        assert_eq!(LockProtocol::for_version("5.7.44-log"), LockProtocol::Ftwrl);
    }

    #[test]
    fn identifiers_and_strings_are_quoted() {
        assert_eq!(quote_identifier("a`b"), "`a``b`");
        assert_eq!(quote_identifier("x; DROP TABLE y"), "`x; DROP TABLE y`");
        assert_eq!(quote_string(r"it's \ ok"), r"'it''s \\ ok'");
    }

    #[test]
    fn points_round_trip_their_gtid() {
        let p = point("0-1-42", Some(("mysql-bin.000003", 1234)));
        assert_eq!(p.0, "gtid=0-1-42;binlog=mysql-bin.000003:1234");
        assert_eq!(gtid_of(&p), "0-1-42");
        assert_eq!(gtid_of(&point("", None)), "");
    }

    #[test]
    fn crash_recovery_is_read_from_the_error_log() {
        assert!(crash_recovery_ran("2024 [Note] InnoDB: Starting crash recovery from checkpoint LSN=123"));
        assert!(!crash_recovery_ran("2024 [Note] InnoDB: 128 rollback segments are active."));
    }

    #[test]
    fn config_is_checked_and_the_password_never_printed() {
        let config = MysqlConfig {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "backup".into(),
            password: SecretString::from("canary-s3cret".to_string()),
            freeze_timeout: Duration::from_secs(5),
            lock_wait_timeout: Duration::from_secs(2),
            server_control: None,
        };
        assert!(!format!("{config:?}").contains("canary-s3cret"));
        assert!(MysqlPlugin::new(config.clone()).is_ok());
        let bad = MysqlConfig { lock_wait_timeout: Duration::from_secs(5), ..config };
        assert!(matches!(MysqlPlugin::new(bad), Err(PluginError::App(m)) if m.contains("lock_wait_timeout")));
    }
}
