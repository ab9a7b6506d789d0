//! Objects shaped as a real API server returns them (kubectl get -o json of a cluster with
//! Trident 24.x): metadata with uid/resourceVersion/creationTimestamp/managedFields-free,
//! owner references with `controller: true`, Trident's CSI volume attributes.
#![allow(dead_code)]

use serde_json::{json, Value};

pub const TRIDENT_BACKEND_UUID: &str = "9b1e5c7a-3f2d-4b8e-a1c4-7e2f0d9b6a35";

fn uid(seed: &str) -> String {
    // Deterministic uid-shaped strings.
    let h = seed.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", h >> 32, (h >> 16) & 0xffff, h & 0xfff, (h >> 8) & 0xfff, h & 0xffff_ffff_ffff)
}

fn meta(name: &str, namespace: Option<&str>) -> Value {
    let mut m = json!({
        "name": name,
        "uid": uid(name),
        "resourceVersion": "48213",
        "creationTimestamp": "2026-11-01T10:00:00Z",
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

/// A pod; `owner` is (kind, name) of its controller; `claims` are (volume name, claim, mount path).
pub fn pod(namespace: &str, name: &str, image: &str, owner: Option<(&str, &str)>, claims: &[(&str, &str, &str)], env: Value) -> Value {
    let mut metadata = meta(name, Some(namespace));
    metadata["labels"] = json!({"app": name.split('-').next().unwrap_or(name)});
    if let Some((kind, owner_name)) = owner {
        metadata["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": kind, "name": owner_name, "uid": uid(owner_name),
            "controller": true, "blockOwnerDeletion": true
        }]);
    }
    let mut volumes: Vec<Value> = claims.iter().map(|(v, c, _)| json!({"name": v, "persistentVolumeClaim": {"claimName": c}})).collect();
    volumes.push(json!({"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}));
    let mut mounts: Vec<Value> = claims.iter().map(|(v, _, path)| json!({"name": v, "mountPath": path})).collect();
    mounts.push(json!({"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}));
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {
            "containers": [{"name": "db", "image": image, "env": env, "volumeMounts": mounts,
                            "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"}],
            "volumes": volumes, "restartPolicy": "Always", "serviceAccountName": "default", "nodeName": "worker-1"
        },
        "status": {"phase": "Running", "podIP": "10.244.1.7", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

pub fn replica_set(namespace: &str, name: &str, deployment: &str) -> Value {
    let mut metadata = meta(name, Some(namespace));
    metadata["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "uid": uid(deployment), "controller": true, "blockOwnerDeletion": true}]);
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": metadata,
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": deployment}}}, "status": {"replicas": 1, "readyReplicas": 1}})
}

/// A PVC; `volume_name` None = Pending.
pub fn pvc(namespace: &str, name: &str, volume_name: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(name, Some(namespace)),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}, "storageClassName": "ontap-gold", "volumeMode": "Filesystem"},
        "status": {"phase": "Pending"}
    });
    v["metadata"]["finalizers"] = json!(["kubernetes.io/pvc-protection"]);
    if let Some(pv) = volume_name {
        v["spec"]["volumeName"] = json!(pv);
        v["status"] = json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"}});
        v["metadata"]["annotations"] = json!({"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
                                              "volume.kubernetes.io/storage-provisioner": "csi.trident.netapp.io"});
    }
    v
}

fn pv(name: &str, claim: Option<(&str, &str)>, source: (&str, Value)) -> Value {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"}, "persistentVolumeReclaimPolicy": "Delete",
                          "storageClassName": "ontap-gold", "volumeMode": "Filesystem"});
    spec[source.0] = source.1;
    if let Some((ns, pvc)) = claim {
        spec["claimRef"] = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": pvc, "namespace": ns, "uid": uid(pvc), "resourceVersion": "48100"});
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": meta(name, None), "spec": spec,
           "status": {"phase": if claim.is_some() { "Bound" } else { "Available" }}})
}

pub fn trident_pv(name: &str, claim: Option<(&str, &str)>, internal_name: &str, backend_uuid: &str) -> Value {
    let mut v = pv(name, claim, ("csi", json!({
        "driver": "csi.trident.netapp.io",
        "fsType": "",
        "volumeAttributes": {
            "backendUUID": backend_uuid,
            "internalName": internal_name,
            "name": name,
            "protocol": "file",
            "storage.kubernetes.io/csiProvisionerIdentity": "1761991200000-8081-csi.trident.netapp.io"
        },
        "volumeHandle": name
    })));
    v["metadata"]["annotations"] = json!({"pv.kubernetes.io/provisioned-by": "csi.trident.netapp.io"});
    v
}

pub fn nfs_pv(name: &str, claim: Option<(&str, &str)>, server: &str, path: &str) -> Value {
    pv(name, claim, ("nfs", json!({"server": server, "path": path})))
}

pub fn other_csi_pv(name: &str, claim: Option<(&str, &str)>) -> Value {
    pv(name, claim, ("csi", json!({"driver": "ebs.csi.aws.com", "volumeHandle": "vol-0a1b2c3d4e5f"})))
}

pub fn trident_backend(uuid: &str, svm: &str) -> Value {
    json!({
        "apiVersion": "trident.netapp.io/v1", "kind": "TridentBackend",
        "metadata": meta(&format!("tbe-{}", &uuid[..5]), Some("trident")),
        "backendName": format!("ontap-nas-{svm}"),
        "backendUUID": uuid,
        "config": {"ontap_config": {"version": 1, "storageDriverName": "ontap-nas", "svm": svm, "managementLIF": "192.0.2.10", "dataLIF": "192.0.2.20"}},
        "configRef": "",
        "online": true,
        "state": "online",
        "version": "1"
    })
}

pub fn secret_env(var: &str, secret: &str, key: &str) -> Value {
    json!([{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}])
}
