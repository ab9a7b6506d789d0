//! The real-MariaDB workload and its checker: writers that record the GTID of every
//! acknowledged commit, and a check that a restored server holds exactly the commits
//! within a consistency point.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use stasis_core::domain::ConsistencyPoint;
use stasis_core::plugins::mysql::gtid_of;
use stasis_scenarios::mariadb::{MariaDb, MariaDbRig};

/// The application schema: an InnoDB table, a MyISAM table and a non-transactional Aria
/// table (`TRANSACTIONAL=0`), each row `(writer, n)` written by one autocommit statement.
pub const TABLES: [(&str, &str); 3] = [("t_innodb", "ENGINE=InnoDB"), ("t_myisam", "ENGINE=MyISAM"), ("t_aria", "ENGINE=Aria TRANSACTIONAL=0")];
pub const DATABASE: &str = "app";

/// Create the schema (as the app user).
pub async fn create_schema(rig: &MariaDbRig) -> anyhow::Result<()> {
    create_schema_on(&rig.server, &rig.app_password).await
}

pub async fn create_schema_on(server: &MariaDb, password: &str) -> anyhow::Result<()> {
    let mut conn = server.app_conn(password, None).await?;
    conn.query_drop(format!("CREATE DATABASE {DATABASE}")).await?;
    for (table, engine) in TABLES {
        conn.query_drop(format!("CREATE TABLE {DATABASE}.{table} (writer INT NOT NULL, n INT NOT NULL, payload VARCHAR(200) NOT NULL, PRIMARY KEY (writer, n)) {engine}")).await?;
    }
    conn.disconnect().await?;
    Ok(())
}

/// A row of the workload: which table, which writer, which sequence number.
pub type RowKey = (&'static str, u32, u32);

/// What the writers know: rows whose commit was acknowledged (with the GTID sequence number
/// the server gave it) and rows whose statement failed (committed or not: unknown).
#[derive(Default, Debug, Clone)]
pub struct History {
    pub acked: BTreeMap<RowKey, u64>,
    pub unknown: BTreeSet<RowKey>,
}

/// The history shared by the writer tasks.
type Log = std::sync::Mutex<History>;

/// Concurrent writers; `stop` ends them and returns the history.
pub struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    log: Arc<Log>,
}

/// The sequence number of a single-domain GTID `0-1-42` (or the last one of a list).
pub fn gtid_seq(gtid: &str) -> Option<u64> {
    gtid.split(',').filter(|g| !g.trim().is_empty()).filter_map(|g| g.trim().rsplit('-').next().and_then(|s| s.parse().ok())).next_back()
}

impl Writers {
    /// Start `n_writers` writers against the rig's server; writer `w` writes table
    /// `TABLES[n % 3]` for its n-th row (so every engine is written all the time).
    pub async fn start(rig: &MariaDbRig, n_writers: u32) -> anyhow::Result<Writers> {
        Self::start_on(&rig.server, &rig.app_password, n_writers).await
    }

    pub async fn start_on(server: &MariaDb, password: &str, n_writers: u32) -> anyhow::Result<Writers> {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Log::default());
        let mut tasks = Vec::new();
        for writer in 0..n_writers {
            let mut conn = server.app_conn(password, Some(DATABASE)).await?;
            let (stop, log) = (stop.clone(), log.clone());
            let (port, password) = (server.port(), password.to_string());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let table = TABLES[(n % 3) as usize].0;
                    let key = (table, writer, n);
                    let payload = format!("w{writer}-n{n}-{}", "x".repeat(100));
                    let result = async {
                        conn.exec_drop(format!("INSERT INTO {table} (writer, n, payload) VALUES (?, ?, ?)"), (writer, n, payload)).await?;
                        conn.query_first::<String, _>("SELECT @@last_gtid").await
                    }
                    .await;
                    match result {
                        Ok(gtid) => match gtid.as_deref().and_then(gtid_seq) {
                            Some(seq) => {
                                log.lock().unwrap().acked.insert(key, seq);
                            }
                            None => {
                                log.lock().unwrap().unknown.insert(key);
                            }
                        },
                        Err(_) => {
                            log.lock().unwrap().unknown.insert(key);
                            // The server may be down (restore, kill): reconnect until stopped.
                            loop {
                                if stop.load(Ordering::Relaxed) {
                                    return;
                                }
                                let opts = mysql_async::OptsBuilder::default()
                                    .ip_or_hostname("127.0.0.1")
                                    .tcp_port(port)
                                    .user(Some(stasis_scenarios::mariadb::APP_USER))
                                    .pass(Some(password.clone()))
                                    .db_name(Some(DATABASE))
                                    .prefer_socket(false);
                                if let Ok(c) = mysql_async::Conn::new(opts).await {
                                    conn = c;
                                    break;
                                }
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
                let _ = conn.disconnect().await;
            }));
        }
        Ok(Writers { stop, tasks, log })
    }

    /// The history so far (writers keep going).
    pub fn snapshot(&self) -> History {
        self.log.lock().unwrap().clone()
    }

    pub async fn stop(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let history = self.log.lock().unwrap().clone();
        history
    }
}

/// Every workload row on `server`.
pub async fn rows_on(server: &MariaDb, password: &str) -> anyhow::Result<BTreeSet<RowKey>> {
    let mut conn = server.app_conn(password, Some(DATABASE)).await?;
    let mut rows = BTreeSet::new();
    for (table, _) in TABLES {
        let found: Vec<(u32, u32)> = conn.query(format!("SELECT writer, n FROM {table}")).await.with_context(|| format!("reading {table}"))?;
        rows.extend(found.into_iter().map(|(w, n)| (table, w, n)));
    }
    conn.disconnect().await?;
    Ok(rows)
}

/// The restored rows must be exactly the acknowledged commits with a GTID within `point`:
/// none acknowledged inside it missing, none after it present; rows whose outcome the
/// writers do not know may go either way; no row the writers never wrote.
pub fn check_rows(rows: &BTreeSet<RowKey>, history: &History, point: &ConsistencyPoint) -> anyhow::Result<CheckSummary> {
    let Some(limit) = gtid_seq(gtid_of(point)) else { bail!("consistency point {point} has no GTID") };
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    let mut expected = 0;
    for (key, seq) in &history.acked {
        let present = rows.contains(key);
        if *seq <= limit {
            expected += 1;
            if !present {
                missing.push((*key, *seq));
            }
        } else if present {
            extra.push((*key, *seq));
        }
    }
    let phantoms: Vec<&RowKey> = rows.iter().filter(|k| !history.acked.contains_key(*k) && !history.unknown.contains(*k)).collect();
    if !missing.is_empty() || !extra.is_empty() || !phantoms.is_empty() {
        bail!(
            "restored rows differ from the commits within {point}: {} acknowledged commit(s) missing (first {:?}), {} commit(s) after the point present (first {:?}), {} row(s) never written (first {:?})",
            missing.len(),
            missing.first(),
            extra.len(),
            extra.first(),
            phantoms.len(),
            phantoms.first()
        );
    }
    Ok(CheckSummary { expected_rows: expected, limit_seq: limit })
}

#[derive(Debug, Clone, Copy)]
pub struct CheckSummary {
    pub expected_rows: usize,
    pub limit_seq: u64,
}

/// Is a backup lock or read lock still held on `server`? A probe commit with a short
/// `lock_wait_timeout` either goes through (no freeze) or times out (error 1205).
pub async fn server_is_frozen(server: &MariaDb) -> anyhow::Result<bool> {
    let mut conn = server.root_conn().await?;
    conn.query_drop("SET SESSION lock_wait_timeout = 1, SESSION innodb_lock_wait_timeout = 1").await?;
    let result = match conn.query_drop("CREATE TABLE IF NOT EXISTS mysql.stasis_probe (id INT PRIMARY KEY AUTO_INCREMENT) ENGINE=InnoDB").await {
        Ok(()) => conn.query_drop("INSERT INTO mysql.stasis_probe VALUES ()").await,
        Err(e) => Err(e),
    };
    let _ = conn.disconnect().await;
    match result {
        Ok(()) => Ok(false),
        Err(mysql_async::Error::Server(e)) if e.code == 1205 => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Kill every session of `user` on the server at `port` (as root): what a network cut or
/// an administrator's `KILL` does to the plugin's lock session.
pub async fn kill_sessions_of(port: u16, user: &str) -> anyhow::Result<usize> {
    let opts = mysql_async::OptsBuilder::default().ip_or_hostname("127.0.0.1").tcp_port(port).user(Some("root")).prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts).await?;
    let ids: Vec<u64> = conn.exec("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?", (user,)).await?;
    for id in &ids {
        // An id from the server itself, formatted as a number.
        let _ = conn.query_drop(format!("KILL CONNECTION {id}")).await;
    }
    conn.disconnect().await?;
    Ok(ids.len())
}

/// Quiet unless `RUST_LOG` asks.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into())).with_test_writer().try_init();
}
