//! Stasis core: the orchestrator's domain, workflows, seams and catalog.
//!
//! Architecture invariant: this crate knows neither HTTP nor ONTAP JSON nor kube types.
//! Arrays are reached through [`storage::Storage`], implemented by `ontap-client`.

pub mod storage;
