//! What `stasis operator` wires into its Backup and Restore controllers: the same pieces
//! `stasis k8s backup|restore` uses ([`crate::restore`], [`crate::quiesce`],
//! [`crate::capture`]), with what the CLI takes from `stasis.yaml` read from the cluster:
//!
//! - the database's user, password, port and container from the workload's pod template,
//!   through the credential references discovery reports (a Secret key, a Secret as
//!   environment, or a literal value); the password is read when the database is first
//!   reached, held as a `SecretString`, never logged or written anywhere;
//! - the app's captured objects in a ConfigMap `stasis-capture-<backup id>` next to the
//!   Backup, owned by it (Kubernetes deletes it with the Backup), since the workflows run on
//!   a throw-away catalog and any replica may run the restore.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use secrecy::SecretString;
use serde_json::{json, Value};
use stasis_core::catalog::Catalog;
use stasis_core::clock::Clock;
use stasis_core::cluster::Workload;
use stasis_core::domain::{AppSpec, BackupRecord, ConsistencyPoint};
use stasis_core::plugin::{AppPlugin, PluginError, RecoveryReport};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::storage::Storage;
use stasis_core::workflow::Orchestrator;
use tokio::sync::OnceCell;

use super::{PluginFactory, RestoreOutcome, RestoreRequest, RestoreRunner};
use crate::capture::CapturedApp;
use crate::crd::{Backup, RestoreMode};
use crate::discovery::{credential_refs, CredentialRef, DbKind};
use crate::error::{Context, K8sError, K8sResult};
use crate::quiesce::{self, ForwardedDb};
use crate::restore::{self, Destination, InClusterDb, KubeAppPlugin, Waits};
use crate::workload::{WorkloadKind, WorkloadRef};
use crate::{DiscoverOptions, KubeCluster};

/// The ConfigMap key holding the captured objects (the catalog attachment's JSON).
pub const CAPTURE_KEY: &str = "capture.json";
/// Label on the capture ConfigMaps, naming the Backup.
pub const CAPTURE_LABEL: &str = "stasis.io/backup";
/// MySQL's port, when the container declares none.
const MYSQL_PORT: u16 = 3306;

pub fn capture_configmap_name(backup_id: &str) -> String {
    format!("stasis-capture-{backup_id}")
}

/// Keep a backup's captured objects in a ConfigMap owned by the Backup. Created, never
/// replaced: a same-named one is an error, not something to overwrite.
pub async fn store_capture(client: &Client, backup: &Backup, backup_id: &str, doc: &Value) -> K8sResult<()> {
    let namespace = backup.namespace().unwrap_or_default();
    let name = capture_configmap_name(backup_id);
    let uid = backup.metadata.uid.clone().ok_or_else(|| K8sError::Invalid("the Backup has no uid".into()))?;
    let text = serde_json::to_string(doc).map_err(|e| K8sError::Invalid(format!("encoding the captured objects: {e}")))?;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {CAPTURE_LABEL: backup.name_any(), "app.kubernetes.io/managed-by": "stasis"},
            // Not blockOwnerDeletion: that would need update on backups/finalizers.
            "ownerReferences": [{"apiVersion": "stasis.io/v1alpha1", "kind": "Backup", "name": backup.name_any(), "uid": uid, "controller": true}]
        },
        "data": {CAPTURE_KEY: text}
    }))
    .map_err(|e| K8sError::Invalid(e.to_string()))?;
    Api::<ConfigMap>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &cm).await.ctx(|| format!("creating configmap {namespace}/{name}"))?;
    Ok(())
}

/// The captured objects of backup `backup_id`, as [`store_capture`] kept them.
pub async fn load_capture(client: &Client, namespace: &str, backup_id: &str) -> K8sResult<Value> {
    let name = capture_configmap_name(backup_id);
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(&name)
        .await
        .ctx(|| format!("reading configmap {namespace}/{name}"))?
        .ok_or_else(|| K8sError::Invalid(format!("backup {backup_id} has no captured Kubernetes objects (configmap {namespace}/{name} is missing), so it cannot be restored through the operator")))?;
    let text = cm.data.as_ref().and_then(|d| d.get(CAPTURE_KEY)).ok_or_else(|| K8sError::Invalid(format!("configmap {namespace}/{name} has no key {CAPTURE_KEY}")))?;
    serde_json::from_str(text).map_err(|e| K8sError::Invalid(format!("configmap {namespace}/{name}: unreadable captured objects: {e}")))
}

/// How to reach the database: who, with which password, on which port of which container.
pub struct DbAccess {
    pub user: String,
    pub password: SecretString,
    pub port: u16,
    pub container: String,
}

impl std::fmt::Debug for DbAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbAccess").field("user", &self.user).field("password", &"<redacted>").field("port", &self.port).field("container", &self.container).finish()
    }
}

/// Where a credential's value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    Literal(String),
    SecretKey { secret: String, key: String },
}

const ROOT_PASSWORD_ENVS: &[&str] = &["MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD"];
const USER_PASSWORD_ENVS: &[&str] = &["MARIADB_PASSWORD", "MYSQL_PASSWORD"];
const USER_ENVS: &[&str] = &["MARIADB_USER", "MYSQL_USER"];

/// The variable `names` of `container`: an `env` entry (literal or Secret key) first, then a
/// Secret given as `envFrom` whose keys are listed in `secret_keys` (name -> keys).
fn env_source(container: &Container, names: &[&str], secret_keys: &dyn Fn(&str) -> Vec<String>) -> Option<ValueSource> {
    for env in container.env.iter().flatten().filter(|e| names.contains(&e.name.as_str())) {
        if let Some(s) = env.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()) {
            return Some(ValueSource::SecretKey { secret: s.name.clone(), key: s.key.clone() });
        }
        if let Some(v) = &env.value {
            return Some(ValueSource::Literal(v.clone()));
        }
    }
    for from in container.env_from.iter().flatten() {
        let Some(s) = &from.secret_ref else { continue };
        let prefix = from.prefix.clone().unwrap_or_default();
        for key in secret_keys(&s.name) {
            if let Some(var) = key.strip_prefix(prefix.as_str()) {
                if names.contains(&var) {
                    return Some(ValueSource::SecretKey { secret: s.name.clone(), key });
                }
            }
        }
    }
    None
}

/// The user and password sources of a MySQL/MariaDB container, from its credential
/// references: the root password if it has one (freezing needs `RELOAD`/`BACKUP_ADMIN`,
/// which the images' own user lacks), else `MYSQL_USER` with `MYSQL_PASSWORD`.
/// `secret_keys` lists the keys of a Secret used as `envFrom`.
pub fn credential_sources(container: &Container, secret_keys: &dyn Fn(&str) -> Vec<String>) -> Result<(ValueSource, ValueSource), String> {
    let refs = credential_refs(container);
    if refs.is_empty() {
        return Err(format!("container {} has no password variable (MYSQL_ROOT_PASSWORD, MARIADB_ROOT_PASSWORD, MYSQL_PASSWORD, ...)", container.name));
    }
    if let Some(pw) = env_source(container, ROOT_PASSWORD_ENVS, secret_keys) {
        return Ok((ValueSource::Literal("root".into()), pw));
    }
    if let Some(pw) = env_source(container, USER_PASSWORD_ENVS, secret_keys) {
        let user = env_source(container, USER_ENVS, secret_keys).ok_or_else(|| format!("container {} sets MYSQL_PASSWORD but no MYSQL_USER / MARIADB_USER", container.name))?;
        return Ok((user, pw));
    }
    let files: Vec<String> = refs.iter().filter_map(|r| if let CredentialRef::File { env, path, .. } = r { Some(format!("{env}={path}")) } else { None }).collect();
    match files.is_empty() {
        true => Err(format!("container {}: no MySQL/MariaDB password the operator can read", container.name)),
        false => Err(format!(
            "container {}: the password is a file inside the container ({}), which the operator cannot read; refer to it through a Secret key instead",
            container.name,
            files.join(", ")
        )),
    }
}

/// The database container of a pod spec (the first whose image is a known database).
fn db_container(spec: &PodSpec) -> Option<(&Container, DbKind)> {
    spec.containers.iter().find_map(|c| Some((c, DbKind::from_image(c.image.as_deref()?)?)))
}

/// The port the database listens on: a port named `mysql`, else 3306 if declared, else the
/// only declared one, else 3306.
fn db_port(container: &Container) -> u16 {
    let ports = container.ports.as_deref().unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("mysql"))
        .or_else(|| ports.iter().find(|p| p.container_port == i32::from(MYSQL_PORT)))
        .or(if ports.len() == 1 { ports.first() } else { None });
    port.and_then(|p| u16::try_from(p.container_port).ok()).unwrap_or(MYSQL_PORT)
}

/// Read a credential (a Secret's key in `namespace`, or a literal).
async fn read_value(client: &Client, namespace: &str, source: &ValueSource) -> K8sResult<SecretString> {
    match source {
        ValueSource::Literal(v) => Ok(SecretString::from(v.clone())),
        ValueSource::SecretKey { secret, key } => {
            let s = Api::<Secret>::namespaced(client.clone(), namespace).get(secret).await.ctx(|| format!("reading secret {namespace}/{secret}"))?;
            let bytes = s.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| K8sError::Invalid(format!("secret {namespace}/{secret} has no key {key}")))?;
            let text = String::from_utf8(bytes.0.clone()).map_err(|_| K8sError::Invalid(format!("secret {namespace}/{secret} key {key} is not UTF-8 text")))?;
            Ok(SecretString::from(text))
        }
    }
}

/// The database access of a workload (its manifest as JSON), with Secrets read in
/// `secrets_namespace` (the app's own, or the namespace a copy is restored into).
pub async fn db_access(client: &Client, workload: &Value, secrets_namespace: &str) -> K8sResult<DbAccess> {
    let what = format!("{} {}", workload["kind"].as_str().unwrap_or("workload"), workload.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default());
    let spec: PodSpec = serde_json::from_value(workload.pointer("/spec/template/spec").cloned().unwrap_or(Value::Null))
        .map_err(|e| K8sError::Invalid(format!("{what}: unreadable pod template: {e}")))?;
    let (container, kind) = db_container(&spec).ok_or_else(|| K8sError::Invalid(format!("{what}: no MySQL or MariaDB container (judged by image)")))?;
    if kind == DbKind::Postgres {
        return Err(K8sError::Invalid(format!("{what} runs PostgreSQL: only MySQL and MariaDB can be quiesced inside the cluster by this build")));
    }
    // Keys of the Secrets used as envFrom, read only if no env entry answers.
    let mut env_secrets = std::collections::BTreeMap::new();
    for from in container.env_from.iter().flatten() {
        if let Some(s) = &from.secret_ref {
            let found = Api::<Secret>::namespaced(client.clone(), secrets_namespace).get_opt(&s.name).await.ctx(|| format!("reading secret {secrets_namespace}/{}", s.name))?;
            let keys: Vec<String> = found.and_then(|s| s.data).map(|d| d.into_keys().collect()).unwrap_or_default();
            env_secrets.insert(s.name.clone(), keys);
        }
    }
    let keys = |name: &str| env_secrets.get(name).cloned().unwrap_or_default();
    let (user, password) = credential_sources(container, &keys).map_err(|e| K8sError::Invalid(format!("{what}: {e}")))?;
    let user = secrecy::ExposeSecret::expose_secret(&read_value(client, secrets_namespace, &user).await?).to_string();
    let password = read_value(client, secrets_namespace, &password).await?;
    Ok(DbAccess { user, password, port: db_port(container), container: container.name.clone() })
}

/// The live manifest of a Deployment or StatefulSet.
async fn workload_manifest(client: &Client, w: &WorkloadRef) -> K8sResult<Value> {
    let what = || format!("reading {}", w.describe());
    let mut v = match w.kind {
        WorkloadKind::Deployment => serde_json::to_value(Api::<Deployment>::namespaced(client.clone(), &w.namespace).get(&w.name).await.ctx(what)?),
        WorkloadKind::StatefulSet => serde_json::to_value(Api::<StatefulSet>::namespaced(client.clone(), &w.namespace).get(&w.name).await.ctx(what)?),
    }
    .map_err(|e| K8sError::Invalid(e.to_string()))?;
    v["kind"] = json!(match w.kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
    });
    Ok(v)
}

/// A [`ForwardedDb`] whose credentials are read when the database is first reached: for a
/// restore into a new namespace, after the conflict check and with that namespace's Secret.
pub struct DeferredDb {
    client: Client,
    workload: Value,
    secrets_namespace: String,
    freeze: std::time::Duration,
    db: OnceCell<ForwardedDb>,
}

impl DeferredDb {
    pub fn new(client: Client, workload: Value, secrets_namespace: String, freeze: std::time::Duration) -> Self {
        DeferredDb { client, workload, secrets_namespace, freeze, db: OnceCell::new() }
    }

    async fn db(&self) -> Result<&ForwardedDb, PluginError> {
        self.db
            .get_or_try_init(|| async {
                let access = db_access(&self.client, &self.workload, &self.secrets_namespace).await.map_err(|e| PluginError::App(e.to_string()))?;
                let factory = quiesce::mysql_factory(access.user, access.password, self.freeze);
                Ok(ForwardedDb::new(self.client.clone(), access.port, Some(access.container), factory))
            })
            .await
    }

    /// Is a port-forward still open (a freeze not released)?
    pub async fn holds_forward(&self) -> bool {
        match self.db.get() {
            Some(db) => db.holds_forward().await,
            None => false,
        }
    }
}

#[async_trait]
impl InClusterDb for DeferredDb {
    async fn quiesce(&self, w: &WorkloadRef) -> Result<ConsistencyPoint, PluginError> {
        self.db().await?.quiesce(w).await
    }
    async fn unquiesce(&self) -> Result<(), PluginError> {
        match self.db.get() {
            Some(db) => db.unquiesce().await,
            None => Ok(()),
        }
    }
    async fn verify(&self, w: &WorkloadRef) -> Result<RecoveryReport, PluginError> {
        self.db().await?.verify(w).await
    }
    async fn release(&self) {
        if let Some(db) = self.db.get() {
            db.release().await;
        }
    }
}

/// The Backup controller's in-cluster quiesce: capture the app's objects, freeze its
/// database through a port-forward, snapshot, close the forward (also on failure).
pub struct InClusterPlugins {
    cluster: Arc<KubeCluster>,
}

impl InClusterPlugins {
    pub fn new(client: Client, storage: Arc<dyn Storage>) -> Self {
        InClusterPlugins { cluster: Arc::new(KubeCluster::new(client, Some(storage), DiscoverOptions::default())) }
    }

    async fn db_for(&self, workload: &Workload, app: &AppSpec) -> K8sResult<(WorkloadRef, Arc<DeferredDb>)> {
        let client = self.cluster.client();
        let w = WorkloadRef::find(client, &workload.namespace, &workload.name).await?;
        let manifest = workload_manifest(client, &w).await?;
        Ok((w, Arc::new(DeferredDb::new(client.clone(), manifest, workload.namespace.clone(), app.freeze_timeout))))
    }
}

#[async_trait]
impl PluginFactory for InClusterPlugins {
    /// The app as core sees it, without capture (what [`PluginFactory::backup`] adds).
    async fn plugin(&self, workload: &Workload, app: &AppSpec) -> Result<Arc<dyn AppPlugin>, String> {
        let (w, db) = self.db_for(workload, app).await.map_err(|e| e.to_string())?;
        Ok(Arc::new(KubeAppPlugin::new(self.cluster.client().clone(), w, db, Destination::InPlace)))
    }

    async fn backup(&self, orchestrator: &Orchestrator, workload: &Workload, app: &AppSpec) -> Result<BackupRecord, String> {
        let (w, db) = self.db_for(workload, app).await.map_err(|e| e.to_string())?;
        // Secrets by reference: the Backup resource has no opt-in for values.
        restore::backup(orchestrator, orchestrator.catalog.as_ref(), &self.cluster, app, &w, db, false).await.map_err(|e| e.to_string())
    }
}

/// The Restore controller's path: the captured objects from the Backup's ConfigMap, core's
/// restore on a throw-away catalog seeded with the backup, in place or into a namespace.
pub struct KubeRestore {
    client: Client,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    pub waits: Waits,
}

impl KubeRestore {
    pub fn new(client: Client, storage: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> Self {
        KubeRestore { client, storage, clock, waits: Waits::default() }
    }

    async fn run(&self, request: RestoreRequest) -> K8sResult<RestoreOutcome> {
        let backup_id = request.backup.id.clone();
        let doc = load_capture(&self.client, &request.namespace, &backup_id).await?;
        let invalid = |e: stasis_core::catalog::CatalogError| K8sError::Invalid(format!("seeding the restore's catalog: {e}"));
        let catalog = Arc::new(SqliteCatalog::open_in_memory().map_err(invalid)?);
        catalog.put_app(&request.app).map_err(invalid)?;
        catalog.put_backup(&request.backup).map_err(invalid)?;
        catalog.put_backup_attachment(&backup_id, &doc).map_err(invalid)?;
        let captured = CapturedApp::load(catalog.as_ref(), &backup_id)?;
        let manifest = captured
            .objects
            .iter()
            .find(|o| WorkloadKind::parse(o["kind"].as_str().unwrap_or_default()) == Some(captured.workload_kind) && o.pointer("/metadata/name").and_then(Value::as_str) == Some(captured.workload_name.as_str()))
            .cloned()
            .ok_or_else(|| K8sError::Invalid(format!("backup {backup_id}: the captured objects lack {}", captured.workload().describe())))?;
        let orchestrator = Orchestrator::new(self.storage.clone(), catalog.clone(), self.clock.clone());
        let (record, target_namespace) = match request.target.mode {
            RestoreMode::InPlace => {
                let db = Arc::new(DeferredDb::new(self.client.clone(), manifest, captured.namespace.clone(), request.app.freeze_timeout));
                (restore::restore_in_place(&orchestrator, catalog.as_ref(), &self.client, &request.app, &backup_id, db, self.waits).await?, None)
            }
            RestoreMode::NewNamespace => {
                let namespace = request.target.namespace.clone().filter(|n| !n.is_empty()).ok_or_else(|| K8sError::Invalid("target.mode NewNamespace needs target.namespace".into()))?;
                let db = Arc::new(DeferredDb::new(self.client.clone(), manifest, namespace.clone(), request.app.freeze_timeout));
                (restore::restore_to_namespace(&orchestrator, catalog.as_ref(), &self.client, &request.app, &backup_id, &namespace, db, self.waits).await?, Some(namespace))
            }
        };
        Ok(RestoreOutcome { restore_id: record.id, target_namespace, recovered_point: record.recovered_point.map(|p| p.0) })
    }
}

#[async_trait]
impl RestoreRunner for KubeRestore {
    async fn restore(&self, request: RestoreRequest) -> Result<RestoreOutcome, String> {
        let what = format!("Restore {}/{}", request.namespace, request.restore_name);
        let span = tracing::info_span!("restore", object = %what, backup = %request.backup.id);
        tracing::Instrument::instrument(self.run(request), span).await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(env: Value, env_from: Value) -> Container {
        serde_json::from_value(json!({"name": "db", "image": "mariadb:10.11", "env": env, "envFrom": env_from})).unwrap()
    }

    fn none(_: &str) -> Vec<String> {
        Vec::new()
    }

    #[test]
    fn the_root_password_is_preferred_and_the_user_needs_its_variable() {
        let c = container(
            json!([{"name": "MARIADB_USER", "value": "shop"}, {"name": "MARIADB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                   {"name": "MARIADB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "root"}}}]),
            json!([]),
        );
        let (user, pw) = credential_sources(&c, &none).unwrap();
        assert_eq!(user, ValueSource::Literal("root".into()));
        assert_eq!(pw, ValueSource::SecretKey { secret: "s".into(), key: "root".into() });

        let c = container(json!([{"name": "MYSQL_USER", "value": "shop"}, {"name": "MYSQL_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}}]), json!([]));
        let (user, pw) = credential_sources(&c, &none).unwrap();
        assert_eq!(user, ValueSource::Literal("shop".into()));
        assert_eq!(pw, ValueSource::SecretKey { secret: "s".into(), key: "pw".into() });

        let c = container(json!([{"name": "MYSQL_PASSWORD", "value": "x"}]), json!([]));
        assert!(credential_sources(&c, &none).unwrap_err().contains("no MYSQL_USER"));
        let c = container(json!([{"name": "MYSQL_ROOT_PASSWORD_FILE", "value": "/run/secrets/pw"}]), json!([]));
        assert!(credential_sources(&c, &none).unwrap_err().contains("/run/secrets/pw"));
        let c = container(json!([]), json!([]));
        assert!(credential_sources(&c, &none).unwrap_err().contains("no password variable"));
    }

    #[test]
    fn a_secret_as_environment_is_read_by_its_keys() {
        let c = container(json!([]), json!([{"secretRef": {"name": "db-env"}}]));
        let keys = |name: &str| if name == "db-env" { vec!["MYSQL_ROOT_PASSWORD".to_string()] } else { Vec::new() };
        let (user, pw) = credential_sources(&c, &keys).unwrap();
        assert_eq!(user, ValueSource::Literal("root".into()));
        assert_eq!(pw, ValueSource::SecretKey { secret: "db-env".into(), key: "MYSQL_ROOT_PASSWORD".into() });
    }

    #[test]
    fn the_port_is_the_declared_mysql_one() {
        let c: Container = serde_json::from_value(json!({"name": "db", "ports": [{"name": "metrics", "containerPort": 9104}, {"name": "mysql", "containerPort": 3307}]})).unwrap();
        assert_eq!(db_port(&c), 3307);
        let c: Container = serde_json::from_value(json!({"name": "db"})).unwrap();
        assert_eq!(db_port(&c), 3306);
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let a = DbAccess { user: "root".into(), password: SecretString::from("hunter2-canary".to_string()), port: 3306, container: "db".into() };
        assert!(!format!("{a:?}").contains("hunter2-canary"));
    }
}
