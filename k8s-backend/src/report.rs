//! What `stasis discover` prints: one row per pod mount (pod, namespace, mount path, volume,
//! app kind, SLA policy, protection status), as a table, JSON or YAML.

use serde::Serialize;
use stasis_core::catalog::{Catalog, CatalogError};

use crate::discovery::{Backing, Inventory};

/// Whether a mount's data is covered by a backup policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    /// The volume belongs to an app in the catalog that has an SLA policy.
    Protected,
    /// The volume belongs to an app in the catalog, but no policy schedules its backups.
    NoPolicy,
    /// An ONTAP volume no app in the catalog covers.
    Unprotected,
    /// An ONTAP volume, and no catalog to tell (no `stasis.yaml`).
    Unknown,
    /// The claim is not bound to a volume (reported, never guessed).
    Unbound,
    /// It looked like ONTAP but the volume could not be identified (see `problem`).
    Unresolved,
    /// Not on ONTAP (another CSI driver, hostPath, ...): Stasis cannot protect it.
    NotOntap,
}

impl Protection {
    pub fn name(self) -> &'static str {
        match self {
            Protection::Protected => "protected",
            Protection::NoPolicy => "no-policy",
            Protection::Unprotected => "unprotected",
            Protection::Unknown => "unknown",
            Protection::Unbound => "unbound",
            Protection::Unresolved => "unresolved",
            Protection::NotOntap => "not-ontap",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoverRow {
    pub pod: String,
    pub namespace: String,
    pub workload: String,
    pub mount_path: String,
    pub pvc: String,
    pub pv: Option<String>,
    /// `svm:volume`.
    pub volume: Option<String>,
    pub app: Option<String>,
    /// The catalog app covering the volume.
    pub protected_by: Option<String>,
    pub sla: Option<String>,
    pub status: Protection,
    /// Why the volume is unbound or unresolved.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiscoverReport {
    pub rows: Vec<DiscoverRow>,
    pub inventory: Inventory,
}

/// Rows for every pod mount, with protection read from the catalog (if there is one).
pub fn rows(inv: &Inventory, catalog: Option<&dyn Catalog>) -> Result<Vec<DiscoverRow>, CatalogError> {
    let apps = match catalog {
        Some(c) => c.apps()?.into_iter().map(|a| Ok((c.app_policy(&a.name)?, a))).collect::<Result<Vec<_>, CatalogError>>()?,
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for app in &inv.apps {
        for pod in &app.pods {
            for m in &pod.mounts {
                let claim = inv.claim(&app.namespace, &m.pvc);
                let (status, protected_by, sla) = match claim.map(|c| (&c.backing, &c.ontap)) {
                    Some((_, Some(v))) => match apps.iter().find(|(_, a)| a.svm == v.svm && a.volumes.contains(&v.volume)) {
                        Some((Some(policy), a)) => (Protection::Protected, Some(a.name.clone()), Some(policy.clone())),
                        Some((None, a)) => (Protection::NoPolicy, Some(a.name.clone()), None),
                        None if catalog.is_none() => (Protection::Unknown, None, None),
                        None => (Protection::Unprotected, None, None),
                    },
                    Some((Backing::Unbound { .. }, None)) | None => (Protection::Unbound, None, None),
                    Some((Backing::NotOntap { .. }, None)) => (Protection::NotOntap, None, None),
                    Some((_, None)) => (Protection::Unresolved, None, None),
                };
                let problem = claim.and_then(|c| match &c.backing {
                    Backing::Unbound { reason } => Some(reason.clone()),
                    _ => c.problem.clone(),
                });
                out.push(DiscoverRow {
                    pod: pod.name.clone(),
                    namespace: app.namespace.clone(),
                    workload: format!("{}/{}", app.owner.kind, app.owner.name),
                    mount_path: m.mount_path.clone(),
                    pvc: m.pvc.clone(),
                    pv: claim.and_then(|c| c.pv.clone()),
                    volume: claim.and_then(|c| c.ontap.as_ref()).map(|v| format!("{}:{}", v.svm, v.volume)),
                    app: app.db.map(|d| d.name().to_string()),
                    protected_by,
                    sla,
                    status,
                    problem,
                });
            }
        }
    }
    Ok(out)
}

/// A plain aligned table; problems are listed under it, one line each.
pub fn table(rows: &[DiscoverRow], warnings: &[String]) -> String {
    let header = ["POD", "NAMESPACE", "MOUNT PATH", "VOLUME", "APP", "SLA", "STATUS"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.pod.clone(),
                r.namespace.clone(),
                r.mount_path.clone(),
                r.volume.clone().unwrap_or_else(|| "-".into()),
                r.app.clone().unwrap_or_else(|| "-".into()),
                r.sla.clone().unwrap_or_else(|| "-".into()),
                r.status.name().into(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&header.map(String::from));
    for row in &cells {
        out.push_str(&line(row));
    }
    if rows.is_empty() {
        out.push_str("(no pod mounts a persistent volume claim)\n");
    }
    for r in rows.iter().filter(|r| r.problem.is_some()) {
        out.push_str(&format!("{}/{} {}: {}\n", r.namespace, r.pod, r.pvc, r.problem.as_deref().unwrap_or_default()));
    }
    for w in warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}
