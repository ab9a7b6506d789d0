//! Stasis core: the orchestrator's domain, workflows, seams and catalog.
//!
//! Architecture invariant: this crate knows neither HTTP nor ONTAP JSON nor kube types.
//! Arrays are reached through [`storage::Storage`] (implemented by `ontap-client`),
//! applications through [`plugin::AppPlugin`], workloads through [`cluster::Cluster`],
//! records through [`catalog::Catalog`].

pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod domain;
pub mod dr;
pub mod plugin;
pub mod plugins;
pub mod replication;
pub mod sqlite_catalog;
pub mod storage;
pub mod volume_data;
pub mod workflow;
