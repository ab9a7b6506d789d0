//! `stasis.yaml`: the topology for real clusters (ONTAP endpoints, apps, policies, catalog).
//!
//! Parsing reports the field path and the line (`apps[1].kind: unknown variant ... at line
//! 14 column 11`); validation reports what is inconsistent across fields (an app naming a
//! cluster that is not defined). Secrets are never in the file: each is read from its own
//! file when first needed and kept in a `SecretString`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use stasis_core::domain::{AppKind, AppSpec, Policy, Schedule};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {field}: {message}", path.display())]
    Invalid { path: PathBuf, field: String, message: String },
    #[error("{field}: cannot read the secret file {}: {source}", file.display())]
    Secret {
        field: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: the secret file {} is empty", file.display())]
    EmptySecret { field: String, file: PathBuf },
}

/// The whole file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub clusters: Vec<ClusterConfig>,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// The SQLite catalog file (created if missing). Relative to the config file.
    pub catalog: PathBuf,
    #[serde(default)]
    pub server: ServerConfig,
    /// The directory of the config file: relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    /// `https://cluster-mgmt.example.com` (or `http://127.0.0.1:PORT` for a local simulator).
    pub url: String,
    pub username: String,
    pub password_file: PathBuf,
    /// Trust only this CA (PEM) for the cluster's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Trust exactly this certificate (PEM), e.g. ONTAP's self-signed one.
    #[serde(default)]
    pub pinned_certificate_file: Option<PathBuf>,
    /// Where other clusters reach this one for SnapMirror peering (ONTAP: the intercluster
    /// LIF addresses). Default: the URL's host (and port, which only ontap-sim accepts).
    #[serde(default)]
    pub intercluster_addresses: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppKindConfig {
    Mysql,
    Simdb,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub name: String,
    pub kind: AppKindConfig,
    pub cluster: String,
    pub svm: String,
    pub volumes: Vec<String>,
    /// Bound on how long the app may stay quiesced, e.g. `2s` or `500ms`.
    #[serde(default)]
    pub freeze_timeout: Option<String>,
    #[serde(default)]
    pub mysql: Option<MysqlConfig>,
    /// Argument vector that stops the server before an in-place restore (no shell).
    #[serde(default)]
    pub stop_command: Option<Vec<String>>,
    #[serde(default)]
    pub start_command: Option<Vec<String>>,
    /// The SLA policy assigned at start (the dashboard's Protect can change it).
    #[serde(default)]
    pub policy: Option<String>,
    /// Shown in the resources table; apps outside Kubernetes default to `local`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Disaster recovery: mirror the app's volumes to another cluster (`stasis dr`).
    #[serde(default)]
    pub dr: Option<DrConfig>,
}

/// An app's DR plan: its volumes mirror (same names) into `svm` on cluster `cluster`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrConfig {
    /// Site B, by its name in `clusters`.
    pub cluster: String,
    /// The SVM on site B that holds the mirrors (peered with the app's SVM by `dr setup`).
    pub svm: String,
    #[serde(default)]
    pub policy: DrPolicyConfig,
    /// How often backups (and so updates) run, e.g. `15m`: the RPO bound `dr status` checks.
    #[serde(default)]
    pub schedule: Option<String>,
}

/// ONTAP's built-in SnapMirror policies that a DR plan may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum DrPolicyConfig {
    /// The snapshot each update carries (and `daily`/`weekly`-labelled ones).
    #[default]
    Asynchronous,
    /// Every snapshot of the source, deletions mirrored.
    MirrorAllSnapshots,
    /// Every write acknowledged once on both sides.
    Sync,
}

impl DrPolicyConfig {
    pub fn ontap_name(self) -> &'static str {
        match self {
            DrPolicyConfig::Asynchronous => "Asynchronous",
            DrPolicyConfig::MirrorAllSnapshots => "MirrorAllSnapshots",
            DrPolicyConfig::Sync => "Sync",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    pub host: String,
    #[serde(default = "mysql_port_default")]
    pub port: u16,
    pub user: String,
    pub password_file: PathBuf,
    /// How long the lock request may wait behind other statements (whole seconds on the
    /// server); below `freeze_timeout`. Default: [`MYSQL_LOCK_WAIT_DEFAULT`], capped at
    /// half the freeze bound.
    #[serde(default)]
    pub lock_wait_timeout: Option<String>,
    /// Where this host sees the array's volumes by junction path (an NFS mount per volume,
    /// or `ontap-sim serve --mount-root`). Restores need it, with `instance_command`.
    #[serde(default)]
    pub mount_root: Option<PathBuf>,
    /// The data directory inside the app's first volume (default: the volume's root).
    #[serde(default)]
    pub data_subdir: Option<PathBuf>,
    /// Argument vector that starts a private server on a restored copy, to verify it, with
    /// placeholders `{datadir}`, `{port}` and `{run_dir}` (its error log must be
    /// `{run_dir}/error.log`).
    #[serde(default)]
    pub instance_command: Option<Vec<String>>,
    /// Bound on each wait for a server to stop, start or accept connections (default 60s).
    #[serde(default)]
    pub start_wait: Option<String>,
}

/// Default bound on the backup lock request of a mysql app.
pub const MYSQL_LOCK_WAIT_DEFAULT: Duration = Duration::from_secs(2);
/// Default bound on a mysql server's stop, start and recovery waits.
pub const MYSQL_START_WAIT_DEFAULT: Duration = Duration::from_secs(60);

fn mysql_port_default() -> u16 {
    3306
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    /// A cron expression (minute hour day-of-month month day-of-week), or
    #[serde(default)]
    pub cron: Option<String>,
    /// a fixed interval such as `15m`.
    #[serde(default)]
    pub every: Option<String>,
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Expire backups older than this, e.g. `7d`.
    #[serde(default)]
    pub max_age: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `127.0.0.1:7070` by default (`serve_cmd::LISTEN_DEFAULT`).
    #[serde(default)]
    pub listen: Option<String>,
    /// The API's bearer token; generated (and printed once) if this file does not exist.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

/// `500ms`, `5s`, `15m`, `1h`, `7d`. A bare number is refused: the unit is not obvious.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as \"500ms\", \"5s\", \"15m\", \"1h\" or \"7d\""))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        "" => return Err(format!("{text:?} needs a unit (ms, s, m, h or d), e.g. \"{text}s\"")),
        other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h or d)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?} must be greater than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Read a secret from a file: the first line, without its line ending.
pub fn read_secret(field: &str, file: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Secret { field: field.to_string(), file: file.to_path_buf(), source })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(ConfigError::EmptySecret { field: field.to_string(), file: file.to_path_buf() });
    }
    Ok(SecretString::from(line.to_string()))
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, path)
    }

    /// Parse and validate `text`, as read from `path` (relative paths resolve against
    /// its directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let deserializer = serde_norway::Deserializer::from_str(text);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            let message = e.into_inner().to_string();
            // serde_norway names the field itself in most messages; add it where it does not.
            let message = if field == "." || message.starts_with(&field) { message } else { format!("{field}: {message}") };
            ConfigError::Parse { path: path.to_path_buf(), message }
        })?;
        config.source = path.to_path_buf();
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { path: self.source.clone(), field: field.into(), message: message.into() }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.clusters.is_empty() {
            return Err(self.invalid("clusters", "at least one cluster is needed"));
        }
        let mut seen = HashSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let field = format!("clusters[{i}]");
            if c.name.trim().is_empty() {
                return Err(self.invalid(format!("{field}.name"), "must not be empty"));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(self.invalid(format!("{field}.name"), format!("cluster {:?} is defined twice", c.name)));
            }
            if !(c.url.starts_with("https://") || c.url.starts_with("http://")) {
                return Err(self.invalid(format!("{field}.url"), format!("{:?} must start with https:// (or http:// for a local simulator)", c.url)));
            }
            if c.ca_file.is_some() && c.pinned_certificate_file.is_some() {
                return Err(self.invalid(field.to_string(), "give ca_file or pinned_certificate_file, not both"));
            }
        }
        let mut policies = HashSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            let field = format!("policies[{i}]");
            if !policies.insert(p.name.as_str()) {
                return Err(self.invalid(format!("{field}.name"), format!("policy {:?} is defined twice", p.name)));
            }
            self.policy(i).map(|_| ())?;
        }
        let mut apps = HashSet::new();
        for (i, a) in self.apps.iter().enumerate() {
            let field = format!("apps[{i}]");
            if a.name.trim().is_empty() {
                return Err(self.invalid(format!("{field}.name"), "must not be empty"));
            }
            if !apps.insert(a.name.as_str()) {
                return Err(self.invalid(format!("{field}.name"), format!("app {:?} is defined twice", a.name)));
            }
            if !self.clusters.iter().any(|c| c.name == a.cluster) {
                let known: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
                return Err(self.invalid(format!("{field}.cluster"), format!("no cluster named {:?} (defined: {})", a.cluster, known.join(", "))));
            }
            if a.volumes.is_empty() || a.volumes.iter().any(|v| v.trim().is_empty()) {
                return Err(self.invalid(format!("{field}.volumes"), "list the app's volumes by name (at least one, none empty)"));
            }
            if a.kind == AppKindConfig::Simdb && a.volumes.len() > 2 {
                return Err(self.invalid(format!("{field}.volumes"), "a simdb app has one volume, or two (data, then log)"));
            }
            match (a.kind, &a.mysql) {
                (AppKindConfig::Mysql, None) => return Err(self.invalid(format!("{field}.mysql"), "kind mysql needs a mysql section: {host, port, user, password_file}")),
                (AppKindConfig::Simdb, Some(_)) => return Err(self.invalid(format!("{field}.mysql"), "only for kind mysql")),
                _ => {}
            }
            if let Some(t) = &a.freeze_timeout {
                parse_duration(t).map_err(|m| self.invalid(format!("{field}.freeze_timeout"), m))?;
            }
            if let Some(m) = &a.mysql {
                self.mysql_timings(i, a)?;
                if m.host.trim().is_empty() || m.user.trim().is_empty() {
                    return Err(self.invalid(format!("{field}.mysql"), "host and user must not be empty"));
                }
                match (&m.mount_root, &m.instance_command) {
                    (Some(_), None) => return Err(self.invalid(format!("{field}.mysql"), "mount_root needs instance_command (how to start a private server on a restored copy), and the other way round")),
                    (None, Some(_)) => return Err(self.invalid(format!("{field}.mysql"), "instance_command needs mount_root (where this host sees the volumes by junction path)")),
                    _ => {}
                }
                if m.instance_command.as_ref().is_some_and(|v| v.is_empty() || v[0].trim().is_empty()) {
                    return Err(self.invalid(format!("{field}.mysql.instance_command"), "an argument vector such as [\"mariadbd\", \"--datadir={datadir}\", \"--port={port}\", ...] (no shell)"));
                }
            }
            match (&a.stop_command, &a.start_command) {
                (Some(_), None) | (None, Some(_)) => return Err(self.invalid(field.to_string(), "give both stop_command and start_command, or neither")),
                _ => {}
            }
            for (name, argv) in [("stop_command", &a.stop_command), ("start_command", &a.start_command)] {
                if argv.as_ref().is_some_and(|v| v.is_empty() || v[0].trim().is_empty()) {
                    return Err(self.invalid(format!("{field}.{name}"), "an argument vector such as [\"systemctl\", \"stop\", \"mariadb\"] (no shell)"));
                }
            }
            if let Some(p) = &a.policy {
                if !policies.contains(p.as_str()) {
                    return Err(self.invalid(format!("{field}.policy"), format!("no policy named {p:?}")));
                }
            }
            if let Some(dr) = &a.dr {
                if !self.clusters.iter().any(|c| c.name == dr.cluster) {
                    let known: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
                    return Err(self.invalid(format!("{field}.dr.cluster"), format!("no cluster named {:?} (defined: {})", dr.cluster, known.join(", "))));
                }
                if dr.cluster == a.cluster {
                    return Err(self.invalid(format!("{field}.dr.cluster"), format!("the app already runs on {:?}: name another cluster (site B)", a.cluster)));
                }
                if dr.svm.trim().is_empty() {
                    return Err(self.invalid(format!("{field}.dr.svm"), "name the SVM on site B that holds the mirrors"));
                }
                if let Some(t) = &dr.schedule {
                    parse_duration(t).map_err(|m| self.invalid(format!("{field}.dr.schedule"), m))?;
                }
            }
        }
        if let (Some(_), None) | (None, Some(_)) = (&self.server.tls_cert_file, &self.server.tls_key_file) {
            return Err(self.invalid("server", "give both tls_cert_file and tls_key_file, or neither"));
        }
        Ok(())
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.resolve(&self.catalog)
    }

    pub fn app(&self, name: &str) -> Result<(usize, &AppConfig), String> {
        self.apps.iter().enumerate().find(|(_, a)| a.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.apps.iter().map(|a| a.name.as_str()).collect();
            if known.is_empty() {
                format!("no app named {name:?}: the config file {} defines no apps", self.source.display())
            } else {
                format!("no app named {name:?} in {} (defined: {})", self.source.display(), known.join(", "))
            }
        })
    }

    pub fn cluster(&self, name: &str) -> Option<(usize, &ClusterConfig)> {
        self.clusters.iter().enumerate().find(|(_, c)| c.name == name)
    }

    /// The app as the workflows see it.
    pub fn app_spec(&self, app: &AppConfig) -> AppSpec {
        AppSpec {
            name: app.name.clone(),
            kind: match app.kind {
                AppKindConfig::Mysql => AppKind::Mysql,
                AppKindConfig::Simdb => AppKind::Simdb,
            },
            svm: app.svm.clone(),
            volumes: app.volumes.clone(),
            freeze_timeout: app.freeze_timeout.as_deref().and_then(|t| parse_duration(t).ok()).unwrap_or(stasis_core::domain::FREEZE_TIMEOUT_DEFAULT),
        }
    }

    /// A mysql app's lock wait and start wait bounds, checked against its freeze bound.
    pub fn mysql_timings(&self, i: usize, app: &AppConfig) -> Result<(Duration, Duration), ConfigError> {
        let field = format!("apps[{i}].mysql");
        let Some(m) = &app.mysql else { return Err(self.invalid(field, "kind mysql needs a mysql section")) };
        let freeze = self.app_spec(app).freeze_timeout;
        let lock_wait = match &m.lock_wait_timeout {
            Some(t) => parse_duration(t).map_err(|e| self.invalid(format!("{field}.lock_wait_timeout"), e))?,
            None => MYSQL_LOCK_WAIT_DEFAULT.min(freeze / 2),
        };
        // The server counts whole seconds: the lock may be waited for up to the next second.
        let effective = Duration::from_secs(lock_wait.as_secs_f64().ceil().max(1.0) as u64);
        if effective >= freeze {
            return Err(self.invalid(
                format!("{field}.lock_wait_timeout"),
                format!("{effective:?} (whole seconds, at least 1s, on the server) must be shorter than the app's freeze_timeout ({freeze:?}): lower it or raise freeze_timeout"),
            ));
        }
        let start_wait = match &m.start_wait {
            Some(t) => parse_duration(t).map_err(|e| self.invalid(format!("{field}.start_wait"), e))?,
            None => MYSQL_START_WAIT_DEFAULT,
        };
        Ok((lock_wait, start_wait))
    }

    /// Policy `i` as the workflows see it.
    pub fn policy(&self, i: usize) -> Result<Policy, ConfigError> {
        let p = &self.policies[i];
        let field = format!("policies[{i}]");
        let schedule = match (&p.cron, &p.every) {
            (Some(expr), None) => {
                // Checked now so a bad expression fails at start, not at the first due time.
                stasis_core::workflow::next_due(&Schedule::Cron { expr: expr.clone() }, None, chrono::Utc::now()).map_err(|m| self.invalid(format!("{field}.cron"), m))?;
                Schedule::Cron { expr: expr.clone() }
            }
            (None, Some(every)) => Schedule::Interval { every: parse_duration(every).map_err(|m| self.invalid(format!("{field}.every"), m))? },
            _ => return Err(self.invalid(field, "give exactly one of cron (e.g. \"0 * * * *\") or every (e.g. \"15m\")")),
        };
        let max_age = match &p.max_age {
            Some(t) => Some(parse_duration(t).map_err(|m| self.invalid(format!("{field}.max_age"), m))?),
            None => None,
        };
        if p.keep_last == Some(0) {
            return Err(self.invalid(format!("{field}.keep_last"), "must be at least 1"));
        }
        Ok(Policy { name: p.name.clone(), schedule, keep_last: p.keep_last, max_age })
    }

    pub fn policies(&self) -> Result<Vec<Policy>, ConfigError> {
        (0..self.policies.len()).map(|i| self.policy(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
clusters:
  - name: a
    url: https://cluster-a.example.com
    username: admin
    password_file: secrets/a
apps:
  - name: bank
    kind: simdb
    cluster: a
    svm: svm0
    volumes: [bank_data, bank_log]
    freeze_timeout: 2s
    policy: hourly
policies:
  - name: hourly
    cron: "0 * * * *"
    keep_last: 24
catalog: stasis.sqlite
"#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/stasis/stasis.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_good_file_parses_and_resolves_relative_paths() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.catalog_path(), PathBuf::from("/etc/stasis/stasis.sqlite"));
        let spec = c.app_spec(&c.apps[0]);
        assert_eq!(spec.freeze_timeout, Duration::from_secs(2));
        assert_eq!(spec.volumes, vec!["bank_data", "bank_log"]);
        assert_eq!(c.policies().unwrap()[0].keep_last, Some(24));
    }

    #[test]
    fn errors_name_the_field_and_the_line() {
        let e = parse(&GOOD.replace("kind: simdb", "kind: postgres")).unwrap_err();
        assert!(e.contains("apps[0].kind") && e.contains("postgres") && e.contains("line 9"), "{e}");
        let e = parse(&GOOD.replace("cluster: a", "cluster: b")).unwrap_err();
        assert!(e.contains("apps[0].cluster") && e.contains("no cluster named \"b\""), "{e}");
        let e = parse(&GOOD.replace("freeze_timeout: 2s", "freeze_timeout: 2")).unwrap_err();
        assert!(e.contains("apps[0].freeze_timeout") && e.contains("needs a unit"), "{e}");
        let e = parse(&GOOD.replace("username: admin", "user: admin")).unwrap_err();
        assert!(e.contains("clusters[0]") && e.contains("unknown field `user`"), "{e}");
        let e = parse(&GOOD.replace("kind: simdb", "kind: mysql")).unwrap_err();
        assert!(e.contains("apps[0].mysql") && e.contains("needs a mysql section"), "{e}");
        let e = parse(&GOOD.replace("policy: hourly", "policy: daily")).unwrap_err();
        assert!(e.contains("apps[0].policy"), "{e}");
        let e = parse(&GOOD.replace("cron: \"0 * * * *\"", "cron: \"not cron\"")).unwrap_err();
        assert!(e.contains("policies[0].cron"), "{e}");
        let e = parse(&GOOD.replace("catalog: stasis.sqlite", "")).unwrap_err();
        assert!(e.contains("missing field `catalog`"), "{e}");
    }

    #[test]
    fn a_mysql_app_is_checked_field_by_field() {
        let mysql = |extra: &str| {
            GOOD.replace("kind: simdb", "kind: mysql").replace("    policy: hourly\n", &format!("    policy: hourly\n    mysql:\n      host: 127.0.0.1\n      user: backup\n      password_file: mysql.pw\n{extra}"))
        };
        let c = parse(&mysql("      mount_root: /mnt/ontap\n      instance_command: [mariadbd, \"--datadir={datadir}\"]\n")).unwrap();
        let m = c.apps[0].mysql.as_ref().unwrap();
        assert_eq!((m.port, m.instance_command.as_ref().map(Vec::len)), (3306, Some(2)));
        // Default lock wait: 2 s capped at half the freeze bound (2 s here).
        assert_eq!(c.mysql_timings(0, &c.apps[0]).unwrap(), (Duration::from_secs(1), MYSQL_START_WAIT_DEFAULT));
        let e = parse(&mysql("      mount_root: /mnt/ontap\n")).unwrap_err();
        assert!(e.contains("apps[0].mysql") && e.contains("instance_command"), "{e}");
        let e = parse(&mysql("      lock_wait_timeout: 2s\n")).unwrap_err();
        assert!(e.contains("apps[0].mysql.lock_wait_timeout") && e.contains("shorter than the app's freeze_timeout"), "{e}");
        let e = parse(&mysql("      start_wait: soon\n")).unwrap_err();
        assert!(e.contains("apps[0].mysql.start_wait"), "{e}");
        let e = parse(&mysql("      mount_root: /m\n      instance_command: []\n")).unwrap_err();
        assert!(e.contains("apps[0].mysql.instance_command") && e.contains("no shell"), "{e}");
        let e = parse(&mysql("      instance_command: mariadbd --datadir=x\n")).unwrap_err();
        assert!(e.contains("apps[0].mysql.instance_command") && e.contains("line 19"), "{e}");
        let e = parse(&mysql("      pasword_file: x\n")).unwrap_err();
        assert!(e.contains("apps[0].mysql") && e.contains("unknown field `pasword_file`"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        let secret = read_secret("clusters[0].password_file", &file).unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
        std::fs::write(&file, "\n").unwrap();
        assert!(read_secret("x", &file).unwrap_err().to_string().contains("is empty"));
        let e = read_secret("clusters[0].password_file", &dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("clusters[0].password_file") && e.contains("missing"), "{e}");
    }
}
