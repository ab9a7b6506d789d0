//! ontap-sim: a faithful ONTAP REST API simulator with a copy-on-write volume model.
//!
//! - [`model`]: the state and ONTAP's rules (volumes, snapshots, clones, consistency groups,
//!   jobs) with no HTTP in it.
//! - [`api`]: the ONTAP REST API under `/api` (axum), with ONTAP's query language and codes.
//! - [`control`]: the simulator's own `/sim/v1` API: data plane and fault injection.
//! - [`replication`]: intercluster calls, SnapMirror transfers between simulators.
//! - [`sim`]: the in-process handle tests and the harness use.
//! - [`server`]: listener, TLS, shutdown.
//! - `fuse` (feature `fuse`, on by default): volumes mounted as real file systems.

pub mod api;
pub mod control;
pub mod error;
#[cfg(feature = "fuse")]
pub mod fuse;
pub mod model;
pub mod replication;
pub mod server;
pub mod sim;

pub use model::cluster::ClusterConfig;
pub use server::{spawn, RunningSim, SimConfig};
pub use sim::Simulator;
