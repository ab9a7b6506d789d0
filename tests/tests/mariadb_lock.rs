//! The MySQL plugin's lock protocol on a real MariaDB (data directory on a FUSE-mounted
//! simulator volume): the exact SQL it sends (read back from the server's general log),
//! the server dropping the lock when the lock session dies, and a lock request stuck
//! behind a long statement failing the backup cleanly at `lock_wait_timeout`.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use stasis_core::domain::{BackupState, Consistency};
use stasis_core::plugin::{AppPlugin, PluginError};
use stasis_scenarios::mariadb::{MariaDbOptions, MariaDbRig, RigOptions};
use stasis_tests::mariadb::{create_schema, init_tracing, server_is_frozen, DATABASE};

/// (connection id, command, argument) for every line of a MariaDB general log, lines like
/// `\t\t    12 Query\tBACKUP STAGE START`, optionally after a timestamp `251125 19:29:51`.
fn general_log_entries(log: &str) -> Vec<(u64, String, String)> {
    let mut entries = Vec::new();
    for line in log.lines() {
        let mut rest = line;
        // A timestamp starts the line when the second changed: `YYMMDD HH:MM:SS`.
        if rest.len() > 15 && rest.as_bytes()[0].is_ascii_digit() && rest.as_bytes()[6] == b' ' {
            rest = &rest[15..];
        }
        let rest = rest.trim_start();
        let Some((id, tail)) = rest.split_once(' ') else { continue };
        let Ok(id) = id.parse::<u64>() else { continue };
        let (command, argument) = tail.split_once('\t').unwrap_or((tail, ""));
        entries.push((id, command.trim().to_string(), argument.trim().to_string()));
    }
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plugin_sends_exactly_the_backup_stage_protocol() -> anyhow::Result<()> {
    init_tracing();
    let opts = RigOptions { server: MariaDbOptions { general_log: true, ..Default::default() }, ..Default::default() };
    let rig = MariaDbRig::start(opts).await?;
    create_schema(&rig).await?;
    let outcome = rig.orchestrator.backup(&rig.app, rig.plugin_dyn()).await?;
    assert_eq!(outcome.record.consistency, Some(Consistency::Application));

    // The server logs the session's `Quit` when it gets to it: wait for it (bounded).
    let mut log = String::new();
    for _ in 0..100 {
        log = std::fs::read_to_string(rig.server.general_log_path())?;
        if log.contains("BACKUP STAGE END") && log.lines().skip_while(|l| !l.contains("BACKUP STAGE END")).any(|l| l.contains("Quit")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entries = general_log_entries(&log);
    let lock_sessions: Vec<u64> = entries.iter().filter(|e| e.2.to_uppercase().starts_with("BACKUP STAGE START")).map(|e| e.0).collect();
    assert_eq!(lock_sessions.len(), 1, "one lock session per backup; general log:\n{log}");
    let session: Vec<String> = entries.iter().filter(|e| e.0 == lock_sessions[0]).map(|e| if e.2.is_empty() || e.1 == "Connect" { e.1.clone() } else { format!("{} {}", e.1, e.2) }).collect();
    let expected = [
        "Connect",
        "Query SELECT @@version",
        "Query SET SESSION lock_wait_timeout = 2, SESSION wait_timeout = 6",
        "Query BACKUP STAGE START",
        "Query BACKUP STAGE BLOCK_COMMIT",
        "Query SELECT @@gtid_binlog_pos",
        "Query SHOW MASTER STATUS",
        "Query BACKUP STAGE END",
        "Quit",
    ];
    assert_eq!(session, expected, "the lock session's statements, in order");
    // No other session touched a lock.
    for (id, _, argument) in &entries {
        let upper = argument.to_uppercase();
        if *id != lock_sessions[0] {
            assert!(!upper.starts_with("BACKUP") && !upper.starts_with("FLUSH") && !upper.starts_with("LOCK") && !upper.starts_with("UNLOCK"), "session {id} sent {argument}");
        }
    }
    // The app's password never reaches the server in statement text.
    let leaked = |log: &str| log.lines().find(|l| l.contains(&rig.app_password)).map(str::to_string);
    if let Some(line) = leaked(&log) {
        panic!("the password is in the general log: {line}\nwhole log:\n{log}");
    }
    // Control for that probe: a statement carrying the password, even as a bound parameter,
    // is logged with it (so the probe would see a plugin that sent one).
    let mut root = rig.server.root_conn().await?;
    let echoed: Option<String> = root.exec_first("SELECT ?", (rig.app_password.as_str(),)).await?;
    assert_eq!(echoed.as_deref(), Some(rig.app_password.as_str()));
    root.disconnect().await?;
    let mut caught = false;
    for _ in 0..100 {
        if leaked(&std::fs::read_to_string(rig.server.general_log_path())?).is_some() {
            caught = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(caught, "the probe missed a statement that carried the password");
    Ok(())
}

/// The lock session of the plugin, found from another session (it is the only one of the
/// app user besides the asking session).
async fn plugin_session_id(rig: &MariaDbRig) -> anyhow::Result<u64> {
    let mut conn = rig.server.root_conn().await?;
    let ids: Vec<u64> = conn.exec("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()", (stasis_scenarios::mariadb::APP_USER,)).await?;
    conn.disconnect().await?;
    anyhow::ensure!(ids.len() == 1, "expected one plugin session, found {ids:?}");
    Ok(ids[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_lock_session_takes_its_lock_with_it() -> anyhow::Result<()> {
    init_tracing();
    let rig = MariaDbRig::start(RigOptions::default()).await?;
    create_schema(&rig).await?;
    assert!(!server_is_frozen(&rig.server).await?, "not frozen before");
    rig.plugin.quiesce().await?;
    // Positive control for the probe: the freeze is visible.
    assert!(server_is_frozen(&rig.server).await?, "frozen while the plugin holds the lock");
    let id = plugin_session_id(&rig).await?;
    let mut admin = rig.server.root_conn().await?;
    admin.query_drop(format!("KILL CONNECTION {id}")).await?;
    admin.disconnect().await?;
    // The server released the lock with the session: nobody thawed it.
    assert!(!server_is_frozen(&rig.server).await?, "the server dropped the lock of the killed session");
    let thaw = rig.plugin.unquiesce().await;
    assert!(matches!(thaw, Err(PluginError::SessionLost(_))), "the thaw reports the lost session: {thaw:?}");
    assert!(matches!(rig.plugin.unquiesce().await, Err(PluginError::SessionLost(_))), "and keeps reporting it until the next quiesce");

    // Through the workflow: the session dies inside the freeze; the backup cannot prove
    // the lock covered its snapshot, so it is kept as crash-consistent only.
    let outcome = rig.orchestrator.backup(&rig.app, std::sync::Arc::new(KillingPlugin::new(&rig))).await?;
    assert_eq!(outcome.record.consistency, Some(Consistency::Crash), "a backup whose lock session died is not application-consistent");
    assert!(outcome.record.evidence.thaw_error.as_deref().unwrap_or("").contains("lost"), "{:?}", outcome.record.evidence);
    assert!(!server_is_frozen(&rig.server).await?);

    // And the plugin works again afterwards.
    rig.plugin.quiesce().await?;
    rig.plugin.unquiesce().await?;
    rig.plugin.unquiesce().await?;
    assert!(!server_is_frozen(&rig.server).await?);
    Ok(())
}

/// The real plugin, whose lock session is killed from outside right after the lock is granted.
struct KillingPlugin {
    inner: stasis_core::plugins::mysql::MysqlPlugin,
    port: u16,
}

impl KillingPlugin {
    fn new(rig: &MariaDbRig) -> Self {
        KillingPlugin { inner: stasis_core::plugins::mysql::MysqlPlugin::new(rig.plugin.config().clone()).expect("valid config"), port: rig.server.port() }
    }
}

#[async_trait::async_trait]
impl AppPlugin for KillingPlugin {
    async fn quiesce(&self) -> Result<stasis_core::domain::ConsistencyPoint, PluginError> {
        let point = self.inner.quiesce().await?;
        stasis_tests::mariadb::kill_sessions_of(self.port, stasis_scenarios::mariadb::APP_USER).await.map_err(|e| PluginError::App(e.to_string()))?;
        Ok(point)
    }
    async fn unquiesce(&self) -> Result<(), PluginError> {
        self.inner.unquiesce().await
    }
    async fn stop(&self) -> Result<(), PluginError> {
        self.inner.stop().await
    }
    async fn start(&self) -> Result<(), PluginError> {
        self.inner.start().await
    }
    async fn recover(&self, target: &stasis_core::plugin::RecoveryTarget) -> Result<stasis_core::plugin::RecoveryReport, PluginError> {
        self.inner.recover(target).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_stuck_behind_a_long_statement_fails_the_backup_cleanly() -> anyhow::Result<()> {
    init_tracing();
    let opts = RigOptions { freeze_timeout: Duration::from_secs(4), lock_wait_timeout: Duration::from_secs(1), ..Default::default() };
    let rig = MariaDbRig::start(opts).await?;
    create_schema(&rig).await?;
    let mut writer = rig.conn(Some(DATABASE)).await?;
    writer.query_drop("INSERT INTO t_myisam (writer, n, payload) VALUES (0, 1, 'x')").await?;
    // A long write to a non-transactional table: BACKUP STAGE must wait for it to end.
    let long = tokio::spawn(async move { writer.query_drop("UPDATE t_myisam SET payload = CONCAT(payload, SLEEP(4))").await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let result = rig.orchestrator.backup(&rig.app, rig.plugin_dyn()).await;
    let error = result.expect_err("the backup cannot get its lock");
    assert!(error.to_string().contains("1205") || error.to_string().contains("Lock wait timeout"), "fails on the lock wait timeout: {error}");
    let records = rig.orchestrator.catalog.backups(Some(&rig.app.name))?;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, BackupState::Failed, "recorded failed");
    assert!(records[0].evidence.lock_granted.is_none(), "the lock was never granted");
    let snapshots = rig.orchestrator.storage.snapshots(&rig.volume_uuid).await?;
    assert!(snapshots.iter().all(|s| !s.name.starts_with("stasis_")), "no snapshot left: {snapshots:?}");
    assert!(!server_is_frozen(&rig.server).await?, "no lock left behind");
    long.await??;
    Ok(())
}
