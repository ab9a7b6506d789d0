//! Stasis on Kubernetes: the `Cluster` seam over kube-rs.
//!
//! - [`discovery`]: pods -> claims -> PVs -> ONTAP volumes (Trident CSI and NFS), database
//!   kind from the image, credentials by reference; pure, fed by [`KubeCluster`].
//! - [`report`]: what `stasis discover` prints (table, JSON, YAML) with SLA and protection.
//! - [`workload`]: scale Deployments and StatefulSets and wait for their pods.
//! - [`capture`]: the app's objects stored with each backup, and their re-application into
//!   a namespace (restore to a new namespace), failing closed on conflicts.
//! - [`restore`]: backup and restore (in place, to a new namespace) through core's workflows,
//!   with `KubeAppPlugin` as the app core sees.
//! - [`quiesce`]: the database reached through a port-forward via the API server.
//! - [`crd`], [`leader`], [`operator`]: the operator's resources, leader election and controller.
//!
//! Architecture invariant: no ONTAP JSON here; ONTAP is reached only through core's
//! `Storage` seam.

pub mod capture;
pub mod cli;
pub mod cluster;
pub mod crd;
pub mod discovery;
pub mod error;
pub mod leader;
pub mod operator;
pub mod quiesce;
// pub mod rbac;
pub mod report;
pub mod restore;
pub mod workload;

pub use cluster::{DiscoverOptions, KubeCluster};
pub use error::{K8sError, K8sResult};
