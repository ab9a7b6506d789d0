//! Discovery: which pods run which databases, on which claims, bound to which volumes, and
//! which ONTAP volume is behind each. [`inventory`] is pure (objects in, inventory out) so
//! property tests can feed it random object graphs; [`crate::KubeCluster::discover`] lists
//! the objects and resolves NFS paths through the `Storage` seam.
//!
//! Nothing is guessed: a claim that is not bound, bound to a PV that does not exist, or
//! bound to a PV that does not point back at it is reported as such, never matched to a
//! volume by name or by likeness.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Container, PersistentVolume, PersistentVolumeClaim, Pod};
use serde::{Deserialize, Serialize};

/// Trident's CSI driver name, as PVs record it in `spec.csi.driver`.
pub const TRIDENT_DRIVER: &str = "csi.trident.netapp.io";

/// The cluster objects discovery reads (one list of each).
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    pub pods: Vec<Pod>,
    pub pvcs: Vec<PersistentVolumeClaim>,
    pub pvs: Vec<PersistentVolume>,
    pub replica_sets: Vec<ReplicaSet>,
    /// Trident backends: `backendUUID` -> the SVM in its ONTAP config.
    pub trident_svms: BTreeMap<String, String>,
}

/// The database a container runs, judged by its image's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DbKind {
    Mysql,
    Mariadb,
    Postgres,
}

impl DbKind {
    /// From an image reference (`registry/path/name:tag@digest`): only the last path segment
    /// counts, so a registry host called `mysql.example.com` does not make nginx a database.
    pub fn from_image(image: &str) -> Option<DbKind> {
        let without_digest = image.split('@').next().unwrap_or(image);
        let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
        let name = last.split(':').next().unwrap_or(last).to_ascii_lowercase();
        if name.contains("mariadb") {
            Some(DbKind::Mariadb)
        } else if name.contains("mysql") || name.contains("percona") {
            Some(DbKind::Mysql)
        } else if name.contains("postgres") || name == "postgis" {
            Some(DbKind::Postgres)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DbKind::Mysql => "mysql",
            DbKind::Mariadb => "mariadb",
            DbKind::Postgres => "postgres",
        }
    }

    pub fn app_kind(self) -> stasis_core::domain::AppKind {
        match self {
            DbKind::Mysql | DbKind::Mariadb => stasis_core::domain::AppKind::Mysql,
            DbKind::Postgres => stasis_core::domain::AppKind::Postgres,
        }
    }
}

/// Where a database's credential can be read: always a reference, never the value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum CredentialRef {
    /// `env[].valueFrom.secretKeyRef`.
    SecretKey { container: String, env: String, secret: String, key: String },
    /// `envFrom[].secretRef`: every key of the Secret becomes a variable.
    SecretEnv { container: String, secret: String },
    /// A `*_FILE` variable naming a file in the container (e.g. a mounted Secret).
    File { container: String, env: String, path: String },
    /// The value is written in the pod spec itself: usable, but worth a warning.
    PlainEnv { container: String, env: String },
}

/// The variables the official images read their passwords from.
const CREDENTIAL_ENVS: &[&str] = &[
    "MYSQL_ROOT_PASSWORD",
    "MYSQL_PASSWORD",
    "MARIADB_ROOT_PASSWORD",
    "MARIADB_PASSWORD",
    "POSTGRES_PASSWORD",
    "PGPASSWORD",
];

/// The credential references of a database container (what discovery reports and the
/// operator reads the password through).
pub fn credential_refs(container: &Container) -> Vec<CredentialRef> {
    let mut refs = Vec::new();
    for env in container.env.iter().flatten() {
        let (name, file) = match env.name.strip_suffix("_FILE") {
            Some(base) => (base, true),
            None => (env.name.as_str(), false),
        };
        if !CREDENTIAL_ENVS.contains(&name) {
            continue;
        }
        let secret = env.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref());
        let r = match (secret, file, &env.value) {
            (Some(s), _, _) => CredentialRef::SecretKey { container: container.name.clone(), env: env.name.clone(), secret: s.name.clone(), key: s.key.clone() },
            (None, true, Some(path)) => CredentialRef::File { container: container.name.clone(), env: env.name.clone(), path: path.clone() },
            (None, false, Some(_)) => CredentialRef::PlainEnv { container: container.name.clone(), env: env.name.clone() },
            _ => continue,
        };
        refs.push(r);
    }
    for from in container.env_from.iter().flatten() {
        if let Some(s) = &from.secret_ref {
            refs.push(CredentialRef::SecretEnv { container: container.name.clone(), secret: s.name.clone() });
        }
    }
    refs
}

/// What runs a pod: its controller, followed through ReplicaSets to their Deployment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// Where a claim's data is, as the PV records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Backing {
    /// A Trident CSI volume: `internalName` is the ONTAP volume's name.
    Trident { internal_name: String, backend_uuid: Option<String> },
    /// A plain NFS PV: the ONTAP volume is the one whose junction path is `path`.
    Nfs { server: String, path: String },
    /// Any other PV source (another CSI driver, hostPath, ...): not an ONTAP volume.
    NotOntap { source: String },
    /// No data to point at: the claim is pending, or its PV is missing or bound elsewhere.
    Unbound { reason: String },
}

/// An ONTAP volume as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OntapVolume {
    pub svm: String,
    pub volume: String,
}

/// One PVC (and the PV bound to it): each appears exactly once in an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claim {
    pub namespace: String,
    pub pvc: String,
    pub pv: Option<String>,
    pub backing: Backing,
    /// The ONTAP volume, once resolved (Trident: from the backend's SVM; NFS: by junction path).
    pub ontap: Option<OntapVolume>,
    /// Why `ontap` is empty for a claim that looked like ONTAP.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountRef {
    pub container: String,
    pub mount_path: String,
    pub pvc: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveredPod {
    pub name: String,
    pub phase: Option<String>,
    pub mounts: Vec<MountRef>,
}

/// A workload: the pods of one controller (or one bare pod) in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveredApp {
    pub namespace: String,
    pub owner: Owner,
    pub db: Option<DbKind>,
    pub image: Option<String>,
    pub credentials: Vec<CredentialRef>,
    pub pods: Vec<DiscoveredPod>,
}

impl DiscoveredApp {
    /// The claims this app's pods mount, each once.
    pub fn claim_names(&self) -> BTreeSet<&str> {
        self.pods.iter().flat_map(|p| p.mounts.iter().map(|m| m.pvc.as_str())).collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub apps: Vec<DiscoveredApp>,
    /// Every claim a pod mounts, keyed by (namespace, name), each exactly once.
    pub claims: Vec<Claim>,
    /// Things the user should know (a backend that could not be listed, a pod that mounts
    /// a claim that does not exist, ...).
    pub warnings: Vec<String>,
}

impl Inventory {
    pub fn claim(&self, namespace: &str, pvc: &str) -> Option<&Claim> {
        self.claims.iter().find(|c| c.namespace == namespace && c.pvc == pvc)
    }
}

fn owner_of(pod: &Pod, replica_sets: &BTreeMap<(&str, &str), &ReplicaSet>) -> Owner {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let controller = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    match controller {
        None => Owner { kind: "Pod".into(), name: pod.metadata.name.clone().unwrap_or_default() },
        Some(o) if o.kind == "ReplicaSet" => {
            // A Deployment's pods belong to a ReplicaSet the Deployment controls; read the
            // ReplicaSet rather than cutting its name's hash off.
            let rs_owner = replica_sets
                .get(&(namespace, o.name.as_str()))
                .and_then(|rs| rs.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true)));
            match rs_owner {
                Some(d) => Owner { kind: d.kind.clone(), name: d.name.clone() },
                None => Owner { kind: o.kind.clone(), name: o.name.clone() },
            }
        }
        Some(o) => Owner { kind: o.kind.clone(), name: o.name.clone() },
    }
}

/// What a claim is bound to, checking that PVC and PV name each other.
pub fn backing(namespace: &str, pvc: &PersistentVolumeClaim, pvs: &BTreeMap<&str, &PersistentVolume>) -> (Option<String>, Backing) {
    let name = pvc.metadata.name.as_deref().unwrap_or_default();
    let phase = pvc.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
    let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty()) else {
        return (None, Backing::Unbound { reason: format!("claim is {phase}, not bound to a volume") });
    };
    let Some(pv) = pvs.get(pv_name.as_str()) else {
        return (Some(pv_name.clone()), Backing::Unbound { reason: format!("claim names volume {pv_name}, which does not exist") });
    };
    // The binding is two-way: the PV's claimRef must name this claim.
    let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let points_back = claim_ref.is_some_and(|r| r.namespace.as_deref() == Some(namespace) && r.name.as_deref() == Some(name));
    if !points_back {
        let other = claim_ref.map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or("?"), r.name.as_deref().unwrap_or("?"))).unwrap_or_else(|| "no claim".into());
        return (Some(pv_name.clone()), Backing::Unbound { reason: format!("volume {pv_name} is bound to {other}, not to this claim") });
    }
    let spec = pv.spec.as_ref().expect("checked above");
    let b = if let Some(csi) = &spec.csi {
        if csi.driver == TRIDENT_DRIVER {
            let attrs = csi.volume_attributes.as_ref();
            match attrs.and_then(|a| a.get("internalName")) {
                Some(internal) => Backing::Trident { internal_name: internal.clone(), backend_uuid: attrs.and_then(|a| a.get("backendUUID")).cloned() },
                None => Backing::NotOntap { source: format!("csi {} without volumeAttributes.internalName", csi.driver) },
            }
        } else {
            Backing::NotOntap { source: format!("csi {}", csi.driver) }
        }
    } else if let Some(nfs) = &spec.nfs {
        Backing::Nfs { server: nfs.server.clone(), path: nfs.path.clone() }
    } else {
        Backing::NotOntap { source: "a volume source other than NFS or Trident CSI".into() }
    };
    (Some(pv_name), b)
}

/// Build the inventory from listed objects. Pods without claims are left out (nothing to
/// protect); claims no pod mounts are left out too (nothing to quiesce).
pub fn inventory(objects: &ClusterObjects) -> Inventory {
    let rs: BTreeMap<(&str, &str), &ReplicaSet> = objects
        .replica_sets
        .iter()
        .filter_map(|r| Some(((r.metadata.namespace.as_deref()?, r.metadata.name.as_deref()?), r)))
        .collect();
    let pvs: BTreeMap<&str, &PersistentVolume> = objects.pvs.iter().filter_map(|p| Some((p.metadata.name.as_deref()?, p))).collect();
    let pvcs: BTreeMap<(&str, &str), &PersistentVolumeClaim> =
        objects.pvcs.iter().filter_map(|c| Some(((c.metadata.namespace.as_deref()?, c.metadata.name.as_deref()?), c))).collect();

    let mut apps: BTreeMap<(String, Owner), DiscoveredApp> = BTreeMap::new();
    let mut claims: BTreeMap<(String, String), Claim> = BTreeMap::new();
    let mut warnings = Vec::new();
    for pod in &objects.pods {
        let (Some(namespace), Some(pod_name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else { continue };
        let Some(spec) = &pod.spec else { continue };
        // Pod volume name -> claim name.
        let claim_volumes: BTreeMap<&str, &str> =
            spec.volumes.iter().flatten().filter_map(|v| Some((v.name.as_str(), v.persistent_volume_claim.as_ref()?.claim_name.as_str()))).collect();
        if claim_volumes.is_empty() {
            continue;
        }
        let mut mounts = Vec::new();
        for c in &spec.containers {
            for m in c.volume_mounts.iter().flatten() {
                if let Some(pvc) = claim_volumes.get(m.name.as_str()) {
                    mounts.push(MountRef { container: c.name.clone(), mount_path: m.mount_path.clone(), pvc: pvc.to_string() });
                }
            }
        }
        for pvc_name in claim_volumes.values() {
            let key = (namespace.to_string(), pvc_name.to_string());
            if claims.contains_key(&key) {
                continue;
            }
            let claim = match pvcs.get(&(namespace, *pvc_name)) {
                Some(pvc) => {
                    let (pv, backing) = backing(namespace, pvc, &pvs);
                    Claim { namespace: namespace.into(), pvc: pvc_name.to_string(), pv, backing, ontap: None, problem: None }
                }
                None => {
                    warnings.push(format!("pod {namespace}/{pod_name} mounts claim {pvc_name}, which does not exist"));
                    Claim {
                        namespace: namespace.into(),
                        pvc: pvc_name.to_string(),
                        pv: None,
                        backing: Backing::Unbound { reason: "claim does not exist".into() },
                        ontap: None,
                        problem: None,
                    }
                }
            };
            claims.insert(key, claim);
        }
        let db_container = spec.containers.iter().find_map(|c| Some((c, DbKind::from_image(c.image.as_deref()?)?)));
        let owner = owner_of(pod, &rs);
        let app = apps.entry((namespace.to_string(), owner.clone())).or_insert_with(|| DiscoveredApp {
            namespace: namespace.into(),
            owner,
            db: db_container.map(|(_, k)| k),
            image: db_container.and_then(|(c, _)| c.image.clone()),
            credentials: db_container.map(|(c, _)| credential_refs(c)).unwrap_or_default(),
            pods: Vec::new(),
        });
        app.pods.push(DiscoveredPod { name: pod_name.into(), phase: pod.status.as_ref().and_then(|s| s.phase.clone()), mounts });
    }
    let mut claims: Vec<Claim> = claims.into_values().collect();
    for claim in &mut claims {
        if let Backing::Trident { internal_name, backend_uuid } = &claim.backing {
            match backend_uuid.as_ref().and_then(|u| objects.trident_svms.get(u)) {
                Some(svm) => claim.ontap = Some(OntapVolume { svm: svm.clone(), volume: internal_name.clone() }),
                None => {
                    claim.problem = Some(format!(
                        "Trident backend {} is not known (no TridentBackend lists it), so its SVM is unknown",
                        backend_uuid.as_deref().unwrap_or("(none recorded)")
                    ))
                }
            }
        }
    }
    for app in apps.values_mut() {
        app.pods.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Inventory { apps: apps.into_values().collect(), claims, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_kind_reads_the_image_name_only() {
        assert_eq!(DbKind::from_image("mariadb:10.11"), Some(DbKind::Mariadb));
        assert_eq!(DbKind::from_image("docker.io/library/mysql:8.0@sha256:abc"), Some(DbKind::Mysql));
        assert_eq!(DbKind::from_image("bitnami/postgresql:15"), Some(DbKind::Postgres));
        assert_eq!(DbKind::from_image("quay.io/mysql-team/nginx:1"), None, "the path before the name does not count");
        assert_eq!(DbKind::from_image("mysql.example.com:5000/nginx:1.25"), None, "nor does the registry host");
        assert_eq!(DbKind::from_image("redis"), None);
    }
}
