//! The simulator's state: pure data and ONTAP rules, no HTTP.
//!
//! - [`fs`]: the copy-on-write file system tree of one volume.
//! - [`space`]: space accounting from block births and deaths.
//! - [`volume`]: a FlexVol with snapshots, SnapRestore and FlexClone sources.
//! - [`delta`]: what changed between two trees, as SnapMirror ships it.
//! - [`peering`], [`snapmirror`]: cluster and SVM peers, replication relationships.
//! - [`cluster`]: SVMs, aggregates, volumes, consistency groups and jobs of one cluster.

pub mod cluster;
pub mod delta;
pub mod fs;
pub mod peering;
pub mod snapmirror;
pub mod space;
pub mod volume;
