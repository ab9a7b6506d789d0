//! The `Cluster` seam over kube-rs: discovery of pods, PVCs, PVs and the ONTAP volume
//! behind each PV, scale down/up, plugin deployment, resource capture, and the operator.
//!
//! Nothing is implemented here yet; the k8s-backend issue fills this crate. It exists now so
//! the workspace has its final shape and `core` can be checked to know nothing of kube types.
