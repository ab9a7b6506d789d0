//! The default catalog: one embedded SQLite file, crash-safe.
//!
//! Each record is stored whole, as JSON, next to the columns it is looked up and ordered by
//! (id, app, state, started_at). Every `put_*` is a single SQL statement, so SQLite's atomic
//! commit makes every call atomic: after a crash the file holds the state before the call or
//! after it, never a mix, and a record's indexed columns cannot disagree with its JSON.
//!
//! The file runs in WAL mode: a commit appends to the log instead of rewriting pages in place,
//! readers (an operator's `sqlite3` shell) do not block the orchestrator, and a log left by a
//! killed process is replayed, up to its last complete commit, by the next open.

use std::fmt::Display;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Params, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::catalog::{Catalog, CatalogError, CatalogResult};
use crate::domain::{AppSpec, BackupRecord, Policy, RestoreRecord};
use crate::dr::{DrPlan, FailoverRecord};

/// Bound on waiting for another connection's write lock before a call fails as `Write`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema steps: entry `i` moves the file from `user_version` `i` to `i + 1`. Append only:
/// a step that has shipped is never edited, since files in the field already ran it.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema. `policy` sits in `apps` so that a policy cannot be assigned to an
    // app the catalog does not know; `put_app` keeps it when it replaces the record.
    "CREATE TABLE apps (
        name   TEXT PRIMARY KEY NOT NULL,
        policy TEXT,
        record TEXT NOT NULL
    ) STRICT;
    CREATE TABLE backups (
        id         TEXT PRIMARY KEY NOT NULL,
        app        TEXT NOT NULL,
        state      TEXT NOT NULL,
        started_at TEXT NOT NULL,
        record     TEXT NOT NULL
    ) STRICT;
    CREATE INDEX backups_by_app ON backups (app, started_at, id);
    CREATE INDEX backups_by_time ON backups (started_at, id);
    CREATE INDEX backups_by_state ON backups (state);
    CREATE TABLE restores (
        id         TEXT PRIMARY KEY NOT NULL,
        backup_id  TEXT NOT NULL,
        app        TEXT NOT NULL,
        state      TEXT NOT NULL,
        started_at TEXT NOT NULL,
        record     TEXT NOT NULL
    ) STRICT;
    CREATE INDEX restores_by_app ON restores (app, started_at, id);
    CREATE INDEX restores_by_time ON restores (started_at, id);
    CREATE INDEX restores_by_backup ON restores (backup_id);
    CREATE TABLE policies (
        name   TEXT PRIMARY KEY NOT NULL,
        record TEXT NOT NULL
    ) STRICT;",
    // 2: disaster recovery. Catalogs written by version 1 gain the two tables and keep
    // everything else as it was.
    "CREATE TABLE dr_plans (
        app    TEXT PRIMARY KEY NOT NULL,
        record TEXT NOT NULL
    ) STRICT;
    CREATE TABLE failovers (
        id         TEXT PRIMARY KEY NOT NULL,
        app        TEXT NOT NULL,
        started_at TEXT NOT NULL,
        record     TEXT NOT NULL
    ) STRICT;
    CREATE INDEX failovers_by_app ON failovers (app, started_at, id);
    CREATE INDEX failovers_by_time ON failovers (started_at, id);",
    // 3: what a backup's platform recorded next to it (Kubernetes objects). A backup's
    // deletion takes its attachment with it in the same statement (the trigger); REPLACE
    // INTO backups does not fire it (recursive_triggers is off), so re-recording a backup
    // keeps its attachment.
    "CREATE TABLE backup_attachments (
        backup_id TEXT PRIMARY KEY NOT NULL,
        record    TEXT NOT NULL
    ) STRICT;
    CREATE TRIGGER backups_delete_attachment AFTER DELETE ON backups
    BEGIN DELETE FROM backup_attachments WHERE backup_id = OLD.id; END;",
];

/// The schema version this build writes (SQLite's `user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The [`Catalog`] in one SQLite file. One connection behind a mutex: catalog calls are few
/// and short, and a single writer is what SQLite wants anyway.
pub struct SqliteCatalog {
    conn: Mutex<Connection>,
}

impl SqliteCatalog {
    /// Opens the catalog at `path`, creating or migrating it as needed.
    pub fn open(path: impl AsRef<Path>) -> CatalogResult<Self> {
        let path = path.as_ref();
        let what = format!("open catalog {}", path.display());
        let conn = Connection::open(path).map_err(write_failed(&what))?;
        let journal_mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(write_failed(&what))?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            return Err(CatalogError::Write(format!("{what}: journal mode is {journal_mode}, not wal")));
        }
        // In WAL mode, NORMAL is already corruption-free after a crash, but it fsyncs only at
        // checkpoints, so a power loss can roll back calls that returned Ok. Callers act on
        // an Ok (a backup marked complete, then its predecessor's snapshots deleted), so a
        // returned write must survive power loss: FULL fsyncs the log on every commit, which
        // at a catalog's write rate costs nothing that matters.
        conn.pragma_update(None, "synchronous", "FULL").map_err(write_failed(&what))?;
        Self::init(conn, &what)
    }

    /// A catalog that lives and dies with this value: for tests and the simulated harness.
    pub fn open_in_memory() -> CatalogResult<Self> {
        let what = "open in-memory catalog";
        Self::init(Connection::open_in_memory().map_err(write_failed(what))?, what)
    }

    fn init(mut conn: Connection, what: &str) -> CatalogResult<Self> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(write_failed(what))?;
        migrate(&mut conn)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    /// Runs SQLite's full consistency check of the file (every page, index and constraint).
    pub fn integrity_check(&self) -> CatalogResult<()> {
        let what = "integrity check";
        let conn = self.conn();
        let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(read_failed(what))?;
        let problems: Vec<String> =
            stmt.query_map([], |row| row.get(0)).and_then(Iterator::collect).map_err(read_failed(what))?;
        match problems.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            _ => Err(CatalogError::Corrupt(problems.join("; "))),
        }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held cannot have left a half-done write behind: SQLite
        // rolls back an unfinished statement, so the connection is still good to use.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one write statement; returns the number of rows it changed.
    fn execute(&self, what: &str, sql: &str, params: impl Params) -> CatalogResult<usize> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(write_failed(what))?;
        stmt.execute(params).map_err(write_failed(what))
    }

    /// Runs a query whose first column is a JSON record, and decodes every row.
    fn query<T: DeserializeOwned>(&self, what: &str, sql: &str, params: impl Params) -> CatalogResult<Vec<T>> {
        let records: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(sql).map_err(read_failed(what))?;
            stmt.query_map(params, |row| row.get(0)).and_then(Iterator::collect).map_err(read_failed(what))?
        };
        records.iter().map(|record| decode(what, record)).collect()
    }

    fn query_one<T: DeserializeOwned>(&self, what: &str, sql: &str, params: impl Params) -> CatalogResult<Option<T>> {
        Ok(self.query(what, sql, params)?.into_iter().next())
    }
}

/// Brings the file up to [`SCHEMA_VERSION`]. The version is read and every step applied in one
/// IMMEDIATE transaction, so two processes opening a new file cannot both migrate it, and a
/// crash mid-migration leaves the old version (`user_version` is in the journaled header).
fn migrate(conn: &mut Connection) -> CatalogResult<()> {
    let what = "migrate catalog schema";
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(write_failed(what))?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(read_failed(what))?;
    let Some(steps) = usize::try_from(version).ok().and_then(|from| MIGRATIONS.get(from..)) else {
        // Not corrupt: written by a newer Stasis. Refuse rather than misread its records.
        return Err(CatalogError::Read(format!(
            "catalog schema version {version} is not one this build knows (0..={SCHEMA_VERSION}): upgrade stasis"
        )));
    };
    for (step, sql) in (version + 1..).zip(steps) {
        tx.execute_batch(sql).map_err(write_failed(what))?;
        tx.pragma_update(None, "user_version", step).map_err(write_failed(what))?;
    }
    tx.commit().map_err(write_failed(what))
}

/// Damage to the file is `Corrupt` whatever the call was; anything else is the call's failure.
fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase))
}

/// For a write, every SQLite failure (full disk, I/O error, busy past the timeout, read-only)
/// means the statement was rolled back: nothing changed.
fn write_failed(what: &str) -> impl FnOnce(rusqlite::Error) -> CatalogError + '_ {
    move |e| match is_corrupt(&e) {
        true => CatalogError::Corrupt(format!("{what}: {e}")),
        false => CatalogError::Write(format!("{what}: {e}")),
    }
}

fn read_failed(what: &str) -> impl FnOnce(rusqlite::Error) -> CatalogError + '_ {
    move |e| match is_corrupt(&e) {
        true => CatalogError::Corrupt(format!("{what}: {e}")),
        false => CatalogError::Read(format!("{what}: {e}")),
    }
}

fn encode<T: Serialize>(what: &str, record: &T) -> CatalogResult<String> {
    serde_json::to_string(record).map_err(|e| CatalogError::Write(format!("{what}: cannot encode record: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, record: &str) -> CatalogResult<T> {
    serde_json::from_str(record).map_err(|e| CatalogError::Corrupt(format!("{what}: undecodable record: {e}")))
}

/// A key that sorts as time does: fixed-width RFC 3339 in UTC with nanoseconds (the records'
/// own JSON drops trailing zero digits, and "10Z" sorts after "10.5Z").
fn time_key(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The serde name of a state (`"complete"`), for the indexed `state` column.
fn state_key<T: Serialize + std::fmt::Debug>(what: impl Display, state: &T) -> CatalogResult<String> {
    match serde_json::to_value(state) {
        Ok(serde_json::Value::String(name)) => Ok(name),
        _ => Err(CatalogError::Write(format!("{what}: state {state:?} has no name"))),
    }
}

impl Catalog for SqliteCatalog {
    fn put_app(&self, app: &AppSpec) -> CatalogResult<()> {
        let what = format!("put app {}", app.name);
        self.execute(
            &what,
            "INSERT INTO apps (name, record) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET record = excluded.record",
            params![app.name, encode(&what, app)?],
        )
        .map(drop)
    }

    fn app(&self, name: &str) -> CatalogResult<Option<AppSpec>> {
        self.query_one(&format!("get app {name}"), "SELECT record FROM apps WHERE name = ?1", [name])
    }

    fn apps(&self) -> CatalogResult<Vec<AppSpec>> {
        self.query("list apps", "SELECT record FROM apps ORDER BY name", [])
    }

    fn set_app_policy(&self, app: &str, policy: Option<&str>) -> CatalogResult<()> {
        let what = format!("set policy of app {app}");
        match self.execute(&what, "UPDATE apps SET policy = ?2 WHERE name = ?1", params![app, policy])? {
            0 => Err(CatalogError::Write(format!("{what}: no such app"))),
            _ => Ok(()),
        }
    }

    fn app_policy(&self, app: &str) -> CatalogResult<Option<String>> {
        let what = format!("get policy of app {app}");
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT policy FROM apps WHERE name = ?1").map_err(read_failed(&what))?;
        let policy: Option<Option<String>> = stmt.query_row([app], |row| row.get(0)).optional().map_err(read_failed(&what))?;
        Ok(policy.flatten())
    }

    fn put_backup(&self, backup: &BackupRecord) -> CatalogResult<()> {
        let what = format!("put backup {}", backup.id);
        self.execute(
            &what,
            "REPLACE INTO backups (id, app, state, started_at, record) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![backup.id, backup.app, state_key(&what, &backup.state)?, time_key(&backup.started_at), encode(&what, backup)?],
        )
        .map(drop)
    }

    fn backup(&self, id: &str) -> CatalogResult<Option<BackupRecord>> {
        self.query_one(&format!("get backup {id}"), "SELECT record FROM backups WHERE id = ?1", [id])
    }

    fn backups(&self, app: Option<&str>) -> CatalogResult<Vec<BackupRecord>> {
        match app {
            Some(app) => self.query(
                &format!("list backups of {app}"),
                "SELECT record FROM backups WHERE app = ?1 ORDER BY started_at, id",
                [app],
            ),
            None => self.query("list backups", "SELECT record FROM backups ORDER BY started_at, id", []),
        }
    }

    fn delete_backup(&self, id: &str) -> CatalogResult<()> {
        self.execute(&format!("delete backup {id}"), "DELETE FROM backups WHERE id = ?1", [id]).map(drop)
    }

    fn put_restore(&self, restore: &RestoreRecord) -> CatalogResult<()> {
        let what = format!("put restore {}", restore.id);
        self.execute(
            &what,
            "REPLACE INTO restores (id, backup_id, app, state, started_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                restore.id,
                restore.backup_id,
                restore.app,
                state_key(&what, &restore.state)?,
                time_key(&restore.started_at),
                encode(&what, restore)?
            ],
        )
        .map(drop)
    }

    fn restore(&self, id: &str) -> CatalogResult<Option<RestoreRecord>> {
        self.query_one(&format!("get restore {id}"), "SELECT record FROM restores WHERE id = ?1", [id])
    }

    fn restores(&self, app: Option<&str>) -> CatalogResult<Vec<RestoreRecord>> {
        match app {
            Some(app) => self.query(
                &format!("list restores of {app}"),
                "SELECT record FROM restores WHERE app = ?1 ORDER BY started_at, id",
                [app],
            ),
            None => self.query("list restores", "SELECT record FROM restores ORDER BY started_at, id", []),
        }
    }

    fn put_policy(&self, policy: &Policy) -> CatalogResult<()> {
        let what = format!("put policy {}", policy.name);
        self.execute(&what, "REPLACE INTO policies (name, record) VALUES (?1, ?2)", params![policy.name, encode(&what, policy)?])
            .map(drop)
    }

    fn policy(&self, name: &str) -> CatalogResult<Option<Policy>> {
        self.query_one(&format!("get policy {name}"), "SELECT record FROM policies WHERE name = ?1", [name])
    }

    fn policies(&self) -> CatalogResult<Vec<Policy>> {
        self.query("list policies", "SELECT record FROM policies ORDER BY name", [])
    }

    fn put_dr_plan(&self, plan: &DrPlan) -> CatalogResult<()> {
        let what = format!("put DR plan of {}", plan.app);
        self.execute(&what, "REPLACE INTO dr_plans (app, record) VALUES (?1, ?2)", params![plan.app, encode(&what, plan)?]).map(drop)
    }

    fn dr_plan(&self, app: &str) -> CatalogResult<Option<DrPlan>> {
        self.query_one(&format!("get DR plan of {app}"), "SELECT record FROM dr_plans WHERE app = ?1", [app])
    }

    fn put_failover(&self, record: &FailoverRecord) -> CatalogResult<()> {
        let what = format!("put failover {}", record.id);
        self.execute(
            &what,
            "REPLACE INTO failovers (id, app, started_at, record) VALUES (?1, ?2, ?3, ?4)",
            params![record.id, record.app, time_key(&record.started_at), encode(&what, record)?],
        )
        .map(drop)
    }

    fn put_backup_attachment(&self, backup_id: &str, attachment: &serde_json::Value) -> CatalogResult<()> {
        let what = format!("put attachment of backup {backup_id}");
        // Only next to a backup that exists: an attachment never outlives its backup.
        let changed = self.execute(
            &what,
            "REPLACE INTO backup_attachments (backup_id, record) SELECT id, ?2 FROM backups WHERE id = ?1",
            params![backup_id, encode(&what, attachment)?],
        )?;
        match changed {
            0 => Err(CatalogError::Write(format!("{what}: no such backup"))),
            _ => Ok(()),
        }
    }

    fn backup_attachment(&self, backup_id: &str) -> CatalogResult<Option<serde_json::Value>> {
        self.query_one(&format!("get attachment of backup {backup_id}"), "SELECT record FROM backup_attachments WHERE backup_id = ?1", [backup_id])
    }

    fn failovers(&self, app: Option<&str>) -> CatalogResult<Vec<FailoverRecord>> {
        match app {
            Some(app) => self.query(
                &format!("list failovers of {app}"),
                "SELECT record FROM failovers WHERE app = ?1 ORDER BY started_at, id",
                [app],
            ),
            None => self.query("list failovers", "SELECT record FROM failovers ORDER BY started_at, id", []),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AppKind, BackupState, Consistency, RestoreMode, RestoreState, Schedule, SnapshotRef};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn app(name: &str) -> AppSpec {
        AppSpec {
            name: name.into(),
            kind: AppKind::Mysql,
            svm: "svm1".into(),
            volumes: vec![format!("{name}_data"), format!("{name}_log")],
            freeze_timeout: Duration::from_millis(2500),
        }
    }

    fn backup(id: &str, app: &str, started_at: &str) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            app: app.into(),
            snapshot_name: BackupRecord::snapshot_name_for(id),
            state: BackupState::Pending,
            consistency: None,
            evidence: Default::default(),
            snapshots: vec![],
            started_at: at(started_at),
            finished_at: None,
            error: None,
            verified: false,
            expired: false,
        }
    }

    fn complete(mut b: BackupRecord) -> BackupRecord {
        b.state = BackupState::Complete;
        b.consistency = Some(Consistency::Application);
        b.snapshots = vec![SnapshotRef {
            volume_uuid: "vu".into(),
            volume_name: "v".into(),
            snapshot_uuid: "su".into(),
            create_time: b.started_at,
        }];
        b.finished_at = Some(b.started_at + chrono::TimeDelta::seconds(3));
        b.verified = true;
        b
    }

    fn restore(id: &str, app: &str, started_at: &str) -> RestoreRecord {
        RestoreRecord {
            id: id.into(),
            backup_id: "b1".into(),
            app: app.into(),
            mode: RestoreMode::Clone { clone_names: vec!["c1".into()] },
            state: RestoreState::Complete,
            clone_volumes: vec![("cu".into(), "c1".into())],
            started_at: at(started_at),
            finished_at: Some(at(started_at)),
            recovered_point: None,
            needed_crash_recovery: Some(false),
            error: None,
        }
    }

    fn policy(name: &str) -> Policy {
        Policy {
            name: name.into(),
            schedule: Schedule::Cron { expr: "0 * * * *".into() },
            keep_last: Some(3),
            max_age: Some(Duration::from_secs(86_400)),
        }
    }

    fn ids(backups: &[BackupRecord]) -> Vec<&str> {
        backups.iter().map(|b| b.id.as_str()).collect()
    }

    #[test]
    fn every_record_type_round_trips_and_replaces() {
        let c = SqliteCatalog::open_in_memory().unwrap();
        assert_eq!(c.app("db").unwrap(), None);
        assert_eq!(c.backup("b1").unwrap(), None);
        assert_eq!(c.restore("r1").unwrap(), None);
        assert_eq!(c.policy("gold").unwrap(), None);

        c.put_app(&app("db")).unwrap();
        let b = backup("b1", "db", "2026-01-01T00:00:00Z");
        c.put_backup(&b).unwrap();
        c.put_restore(&restore("r1", "db", "2026-01-02T00:00:00Z")).unwrap();
        c.put_policy(&policy("gold")).unwrap();
        assert_eq!(c.app("db").unwrap(), Some(app("db")));
        assert_eq!(c.backup("b1").unwrap(), Some(b.clone()));
        assert_eq!(c.restore("r1").unwrap(), Some(restore("r1", "db", "2026-01-02T00:00:00Z")));
        assert_eq!(c.policy("gold").unwrap(), Some(policy("gold")));

        // Replacing a record replaces every field, and leaves one record.
        c.put_backup(&complete(b.clone())).unwrap();
        assert_eq!(c.backup("b1").unwrap(), Some(complete(b)));
        assert_eq!(c.backups(None).unwrap().len(), 1);
        let mut db = app("db");
        db.volumes.push("db_extra".into());
        c.put_app(&db).unwrap();
        assert_eq!(c.apps().unwrap(), vec![db]);
        let mut gold = policy("gold");
        gold.schedule = Schedule::Interval { every: Duration::from_secs(600) };
        gold.max_age = None;
        c.put_policy(&gold).unwrap();
        assert_eq!(c.policies().unwrap(), vec![gold]);
    }

    #[test]
    fn listings_filter_by_app_and_order_oldest_first() {
        let c = SqliteCatalog::open_in_memory().unwrap();
        // Inserted out of order; "10Z" vs "10.5Z" catches a sort on the records' own JSON text;
        // b2 and b3 tie on time and are ordered by id.
        for b in [
            backup("b4", "db", "2026-01-01T00:00:11Z"),
            backup("b3", "other", "2026-01-01T00:00:10.500Z"),
            backup("b2", "db", "2026-01-01T00:00:10.500Z"),
            backup("b1", "db", "2026-01-01T00:00:10Z"),
        ] {
            c.put_backup(&b).unwrap();
        }
        assert_eq!(ids(&c.backups(None).unwrap()), ["b1", "b2", "b3", "b4"]);
        assert_eq!(ids(&c.backups(Some("db")).unwrap()), ["b1", "b2", "b4"]);
        assert_eq!(ids(&c.backups(Some("other")).unwrap()), ["b3"]);
        assert!(c.backups(Some("nobody")).unwrap().is_empty());

        c.put_restore(&restore("r2", "db", "2026-01-03T00:00:00Z")).unwrap();
        c.put_restore(&restore("r1", "db", "2026-01-02T00:00:00Z")).unwrap();
        c.put_restore(&restore("r3", "other", "2026-01-01T00:00:00Z")).unwrap();
        let restore_ids = |app| c.restores(app).unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(restore_ids(None), ["r3", "r1", "r2"]);
        assert_eq!(restore_ids(Some("db")), ["r1", "r2"]);

        for name in ["zeta", "alpha"] {
            c.put_app(&app(name)).unwrap();
            c.put_policy(&policy(name)).unwrap();
        }
        assert_eq!(c.apps().unwrap(), [app("alpha"), app("zeta")]);
        assert_eq!(c.policies().unwrap(), [policy("alpha"), policy("zeta")]);
    }

    #[test]
    fn a_version_1_catalog_migrates_keeping_its_records_and_gains_dr_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            // A file exactly as the first release wrote it.
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(MIGRATIONS[0]).unwrap();
            tx.pragma_update(None, "user_version", 1).unwrap();
            let b = complete(backup("b1", "db", "2026-01-01T00:00:00Z"));
            tx.execute(
                "INSERT INTO backups (id, app, state, started_at, record) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![b.id, b.app, "complete", time_key(&b.started_at), serde_json::to_string(&b).unwrap()],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let c = SqliteCatalog::open(&path).unwrap();
        assert_eq!(c.backup("b1").unwrap(), Some(complete(backup("b1", "db", "2026-01-01T00:00:00Z"))));
        let version: i64 = c.conn().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);

        let plan = crate::dr::DrPlan {
            app: "db".into(),
            source_cluster: "a".into(),
            destination_cluster: "b".into(),
            source_svm: "svm1".into(),
            destination_svm: "svm_dr".into(),
            volumes: vec![crate::dr::VolumePair { source: "db_data".into(), destination: "db_data_dr".into(), relationship_uuid: Some("r1".into()), reverse_relationship_uuid: None }],
            policy: crate::dr::POLICY_ASYNC_DEFAULT.into(),
            schedule: Some(Duration::from_secs(300)),
            state: crate::dr::DrState::Mirrored,
            active_site: crate::dr::Site::A,
            updated_at: at("2026-01-01T00:00:00Z"),
        };
        c.put_dr_plan(&plan).unwrap();
        assert_eq!(c.dr_plan("db").unwrap(), Some(plan));
        assert_eq!(c.dr_plan("other").unwrap(), None);
        let failover = |id: &str, app: &str, t: &str| crate::dr::FailoverRecord {
            id: id.into(),
            app: app.into(),
            kind: crate::dr::FailoverKind::Unplanned,
            state: crate::dr::FailoverState::Complete,
            from_site: crate::dr::Site::A,
            to_site: crate::dr::Site::B,
            started_at: at(t),
            finished_at: Some(at(t)),
            restored_backup_id: Some("b1".into()),
            restored_snapshot: Some("stasis_b1".into()),
            restored_state_at: Some(at("2026-01-01T00:00:00Z")),
            expected_point: None,
            recovered_point: None,
            rpo: Some(Duration::from_millis(1500)),
            rto: Some(Duration::from_millis(250)),
            bytes_transferred: 0,
            verified: true,
            divergence: None,
            error: None,
        };
        c.put_failover(&failover("f2", "db", "2026-01-03T00:00:00Z")).unwrap();
        c.put_failover(&failover("f1", "db", "2026-01-02T00:00:00Z")).unwrap();
        c.put_failover(&failover("f3", "other", "2026-01-01T00:00:00Z")).unwrap();
        let got = c.failovers(Some("db")).unwrap();
        assert_eq!(got.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["f1", "f2"]);
        assert_eq!(got[0].rpo, Some(Duration::from_millis(1500)));
        assert_eq!(c.failovers(None).unwrap().len(), 3);
    }

    #[test]
    fn delete_removes_one_backup_and_is_idempotent() {
        let c = SqliteCatalog::open_in_memory().unwrap();
        c.put_backup(&backup("b1", "db", "2026-01-01T00:00:00Z")).unwrap();
        c.put_backup(&backup("b2", "db", "2026-01-02T00:00:00Z")).unwrap();
        c.delete_backup("b1").unwrap();
        c.delete_backup("b1").unwrap();
        assert_eq!(c.backup("b1").unwrap(), None);
        assert_eq!(ids(&c.backups(Some("db")).unwrap()), ["b2"]);
    }

    #[test]
    fn policy_assignment_survives_app_replacement_and_needs_the_app() {
        let c = SqliteCatalog::open_in_memory().unwrap();
        assert!(matches!(c.set_app_policy("db", Some("gold")), Err(CatalogError::Write(_))));
        assert_eq!(c.app_policy("db").unwrap(), None);
        c.put_app(&app("db")).unwrap();
        assert_eq!(c.app_policy("db").unwrap(), None);
        c.set_app_policy("db", Some("gold")).unwrap();
        c.put_app(&app("db")).unwrap();
        assert_eq!(c.app_policy("db").unwrap().as_deref(), Some("gold"));
        c.set_app_policy("db", None).unwrap();
        assert_eq!(c.app_policy("db").unwrap(), None);
    }

    #[test]
    fn a_file_catalog_is_wal_full_sync_current_schema_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        {
            let c = SqliteCatalog::open(&path).unwrap();
            c.put_app(&app("db")).unwrap();
            c.set_app_policy("db", Some("gold")).unwrap();
            let conn = c.conn();
            let pragma = |name| conn.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0)).unwrap();
            assert_eq!(pragma("journal_mode"), rusqlite::types::Value::Text("wal".into()));
            assert_eq!(pragma("synchronous"), rusqlite::types::Value::Integer(2), "FULL");
            assert_eq!(pragma("user_version"), rusqlite::types::Value::Integer(SCHEMA_VERSION));
        }
        let c = SqliteCatalog::open(&path).unwrap();
        assert_eq!(c.apps().unwrap(), [app("db")]);
        assert_eq!(c.app_policy("db").unwrap().as_deref(), Some("gold"));
        c.integrity_check().unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        drop(SqliteCatalog::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        assert!(matches!(SqliteCatalog::open(&path), Err(CatalogError::Read(m)) if m.contains("upgrade")));
    }

    #[test]
    fn an_attachment_lives_and_dies_with_its_backup() {
        let c = SqliteCatalog::open_in_memory().unwrap();
        let doc = serde_json::json!({"objects": [{"kind": "Deployment", "metadata": {"name": "db"}}]});
        assert!(matches!(c.put_backup_attachment("b1", &doc), Err(CatalogError::Write(m)) if m.contains("no such backup")));
        c.put_backup(&backup("b1", "db", "2026-01-01T00:00:00Z")).unwrap();
        c.put_backup_attachment("b1", &doc).unwrap();
        // Re-recording the backup (REPLACE) keeps it; deleting the backup removes it.
        c.put_backup(&complete(backup("b1", "db", "2026-01-01T00:00:00Z"))).unwrap();
        assert_eq!(c.backup_attachment("b1").unwrap(), Some(doc));
        c.delete_backup("b1").unwrap();
        assert_eq!(c.backup_attachment("b1").unwrap(), None);
        let left: i64 = c.conn().query_row("SELECT count(*) FROM backup_attachments", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn damage_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        assert!(matches!(SqliteCatalog::open(&path), Err(CatalogError::Corrupt(_))));

        let c = SqliteCatalog::open_in_memory().unwrap();
        c.put_backup(&backup("b1", "db", "2026-01-01T00:00:00Z")).unwrap();
        c.conn().execute("UPDATE backups SET record = '{\"id\": \"b1\"'", []).unwrap();
        assert!(matches!(c.backup("b1"), Err(CatalogError::Corrupt(_))));
        assert!(matches!(c.backups(None), Err(CatalogError::Corrupt(_))));
    }

    #[test]
    fn a_full_disk_fails_the_write_and_keeps_the_old_record() {
        let dir = tempfile::tempdir().unwrap();
        let c = SqliteCatalog::open(dir.path().join("catalog.db")).unwrap();
        let old = backup("b1", "db", "2026-01-01T00:00:00Z");
        c.put_backup(&old).unwrap();

        // Cap the file at its current size: a record that needs new pages has no room.
        let pages: i64 = c.conn().pragma_query_value(None, "page_count", |row| row.get(0)).unwrap();
        c.conn().pragma_update(None, "max_page_count", pages).unwrap();
        let mut big = complete(old.clone());
        big.error = Some("x".repeat(1 << 20));
        match c.put_backup(&big) {
            Err(CatalogError::Write(m)) => assert!(m.contains("full"), "{m}"),
            other => panic!("expected a Write error, got {other:?}"),
        }
        assert_eq!(c.backup("b1").unwrap(), Some(old.clone()));
        assert_eq!(c.backups(None).unwrap(), [old]);
        c.integrity_check().unwrap();

        // Once there is room again, the same write goes through.
        c.conn().pragma_update(None, "max_page_count", 1 << 30).unwrap();
        c.put_backup(&big).unwrap();
        assert_eq!(c.backup("b1").unwrap(), Some(big));
    }
}
