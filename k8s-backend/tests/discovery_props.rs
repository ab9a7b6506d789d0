//! Property: over random pod / PVC / PV graphs across namespaces, every claim a pod mounts
//! is found exactly once, every ONTAP volume belongs to at most one claim, a claim is matched
//! to a volume only when the PVC and the PV name each other (unbound claims are reported
//! with a reason, never guessed), and every mount refers to a listed claim. The checker is
//! shown to catch broken inventories (negative controls at the bottom).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{json, Value};
use stasis_k8s::discovery::{self, Backing, ClusterObjects, Inventory, OntapVolume};
use support::fixtures::*;

const NAMESPACES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum PvSource {
    Trident { known_backend: bool },
    Nfs,
    Other,
}

#[derive(Debug, Clone)]
enum Binding {
    Pending,
    /// Bound to PV `i`, which names this claim back.
    Bound(usize),
    /// Names PV `i`, but that PV's claimRef names another claim (or none).
    Stolen(usize),
    /// Names a PV that does not exist.
    Missing,
}

#[derive(Debug, Clone)]
struct Graph {
    pvs: Vec<PvSource>,
    /// (namespace, binding)
    claims: Vec<(usize, Binding)>,
    /// (namespace, owner kind 0 bare / 1 deployment / 2 statefulset, owner id, claims mounted: indices or a missing name)
    pods: Vec<(usize, u8, u8, Vec<Option<usize>>)>,
}

fn graph() -> impl Strategy<Value = Graph> {
    (1usize..8).prop_flat_map(|n_pvs| {
        let pvs = proptest::collection::vec(prop_oneof![any::<bool>().prop_map(|k| PvSource::Trident { known_backend: k }), Just(PvSource::Nfs), Just(PvSource::Other)], n_pvs);
        let binding = prop_oneof![
            Just(Binding::Pending),
            (0..n_pvs).prop_map(Binding::Bound),
            (0..n_pvs).prop_map(Binding::Stolen),
            Just(Binding::Missing)
        ];
        let claims = proptest::collection::vec((0usize..3, binding), 0..10);
        (pvs, claims).prop_flat_map(|(pvs, claims)| {
            let n_claims = claims.len();
            let mount = prop_oneof![4 => (0..n_claims.max(1)).prop_map(Some), 1 => Just(None)];
            let pods = proptest::collection::vec((0usize..3, 0u8..3, 0u8..3, proptest::collection::vec(mount, 0..3)), 0..10);
            (Just(pvs), Just(claims), pods).prop_map(|(pvs, claims, pods)| Graph { pvs, claims, pods })
        })
    })
}

/// Turn the graph into API objects. A PV is claimed by the first claim that binds it; later
/// "Bound" claims to the same PV become stolen ones (a PV binds one claim).
fn objects(g: &Graph) -> (ClusterObjects, BTreeMap<(String, String), Option<OntapVolume>>) {
    let mut pv_claim: BTreeMap<usize, (String, String)> = BTreeMap::new();
    let mut pvcs = Vec::new();
    let mut expected = BTreeMap::new();
    for (i, (ns, binding)) in g.claims.iter().enumerate() {
        let (ns, name) = (NAMESPACES[*ns].to_string(), format!("claim-{i}"));
        let (volume_name, ontap) = match binding {
            Binding::Pending => (None, None),
            Binding::Missing => (Some(format!("pv-gone-{i}")), None),
            Binding::Bound(p) | Binding::Stolen(p) => {
                let wins = matches!(binding, Binding::Bound(_)) && !pv_claim.contains_key(p);
                let ontap = if wins {
                    pv_claim.insert(*p, (ns.clone(), name.clone()));
                    match g.pvs[*p] {
                        PvSource::Trident { known_backend: true } => Some(OntapVolume { svm: "svm0".into(), volume: format!("trident_pv_{p}") }),
                        _ => None,
                    }
                } else {
                    None
                };
                (Some(format!("pv-{p}")), ontap)
            }
        };
        pvcs.push(serde_json::from_value(pvc(&ns, &name, volume_name.as_deref())).unwrap());
        expected.insert((ns, name), ontap);
    }
    let pvs = g
        .pvs
        .iter()
        .enumerate()
        .map(|(p, source)| {
            let claim = pv_claim.get(&p).map(|(ns, n)| (ns.as_str(), n.as_str()));
            let name = format!("pv-{p}");
            let v: Value = match source {
                PvSource::Trident { known_backend } => {
                    trident_pv(&name, claim, &format!("trident_pv_{p}"), if *known_backend { TRIDENT_BACKEND_UUID } else { "00000000-dead-4bee-a000-000000000000" })
                }
                PvSource::Nfs => nfs_pv(&name, claim, "192.0.2.20", &format!("/pv{p}")),
                PvSource::Other => other_csi_pv(&name, claim),
            };
            serde_json::from_value(v).unwrap()
        })
        .collect();
    let mut pods = Vec::new();
    let mut replica_sets = Vec::new();
    for (i, (ns, owner_kind, owner_id, mounts)) in g.pods.iter().enumerate() {
        let ns = NAMESPACES[*ns];
        let claims: Vec<(String, String, String)> = mounts
            .iter()
            .enumerate()
            .map(|(m, c)| {
                let claim = match c {
                    Some(c) if *c < g.claims.len() && NAMESPACES[g.claims[*c].0] == ns => format!("claim-{c}"),
                    _ => format!("no-such-claim-{i}-{m}"),
                };
                (format!("v{m}"), claim, format!("/data{m}"))
            })
            .collect();
        let refs: Vec<(&str, &str, &str)> = claims.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
        let owner = match owner_kind {
            1 => {
                let rs = format!("dep{owner_id}-5f6d7");
                replica_sets.push(serde_json::from_value(replica_set(ns, &rs, &format!("dep{owner_id}"))).unwrap());
                Some(("ReplicaSet".to_string(), rs))
            }
            2 => Some(("StatefulSet".to_string(), format!("sts{owner_id}"))),
            _ => None,
        };
        let p = pod(ns, &format!("pod-{i}"), "mariadb:11", owner.as_ref().map(|(k, n)| (k.as_str(), n.as_str())), &refs, json!([]));
        pods.push(serde_json::from_value(p).unwrap());
    }
    // Duplicate ReplicaSets (same owner in several pods) are harmless; dedupe like a list would.
    let mut seen = BTreeSet::new();
    replica_sets.retain(|r: &k8s_openapi::api::apps::v1::ReplicaSet| seen.insert((r.metadata.namespace.clone(), r.metadata.name.clone())));
    let trident_svms = BTreeMap::from([(TRIDENT_BACKEND_UUID.to_string(), "svm0".to_string())]);
    (ClusterObjects { pods, pvcs, pvs, replica_sets, trident_svms }, expected)
}

/// The checker: reads only the objects' graph (through `expected`) and the inventory.
fn check(objects: &ClusterObjects, expected: &BTreeMap<(String, String), Option<OntapVolume>>, inv: &Inventory) -> Result<(), String> {
    let mounted: BTreeSet<(String, String)> = objects
        .pods
        .iter()
        .flat_map(|p| {
            let ns = p.metadata.namespace.clone().unwrap();
            p.spec.as_ref().unwrap().volumes.iter().flatten().filter_map(move |v| Some((ns.clone(), v.persistent_volume_claim.as_ref()?.claim_name.clone())))
        })
        .collect();
    let mut listed = BTreeSet::new();
    for c in &inv.claims {
        if !listed.insert((c.namespace.clone(), c.pvc.clone())) {
            return Err(format!("claim {}/{} listed twice", c.namespace, c.pvc));
        }
    }
    if listed != mounted {
        return Err(format!("claims listed {listed:?} != claims mounted {mounted:?}"));
    }
    let mut volumes = BTreeSet::new();
    for c in &inv.claims {
        let want = expected.get(&(c.namespace.clone(), c.pvc.clone())).cloned().flatten();
        if c.ontap != want {
            return Err(format!("claim {}/{} resolved to {:?}, expected {:?}", c.namespace, c.pvc, c.ontap, want));
        }
        if let Some(v) = &c.ontap {
            if !volumes.insert(v.clone()) {
                return Err(format!("volume {v:?} found twice"));
            }
        }
        let bound = expected.contains_key(&(c.namespace.clone(), c.pvc.clone()))
            && objects.pvs.iter().any(|pv| {
                let r = pv.spec.as_ref().unwrap().claim_ref.as_ref();
                r.is_some_and(|r| r.namespace.as_deref() == Some(&c.namespace) && r.name.as_deref() == Some(&c.pvc))
                    && Some(pv.metadata.name.clone().unwrap()) == c.pv
            });
        match (&c.backing, bound) {
            (Backing::Unbound { reason }, false) if !reason.is_empty() => {}
            (Backing::Unbound { .. }, true) => return Err(format!("bound claim {}/{} reported unbound", c.namespace, c.pvc)),
            (Backing::Unbound { .. }, false) => return Err("unbound without a reason".into()),
            (_, false) => return Err(format!("unbound claim {}/{} was given a backing {:?}", c.namespace, c.pvc, c.backing)),
            (_, true) => {}
        }
    }
    for app in &inv.apps {
        for pod in &app.pods {
            for m in &pod.mounts {
                if inv.claim(&app.namespace, &m.pvc).is_none() {
                    return Err(format!("mount {} of {} refers to an unlisted claim", m.mount_path, pod.name));
                }
            }
        }
    }
    let n_pods: usize = inv.apps.iter().map(|a| a.pods.len()).sum();
    let n_pods_with_claims = objects.pods.iter().filter(|p| p.spec.as_ref().unwrap().volumes.iter().flatten().any(|v| v.persistent_volume_claim.is_some())).count();
    if n_pods != n_pods_with_claims {
        return Err(format!("{n_pods} pods in apps, {n_pods_with_claims} pods mount claims"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn every_volume_is_found_exactly_once(g in graph()) {
        let (objects, expected) = objects(&g);
        let inv = discovery::inventory(&objects);
        if let Err(why) = check(&objects, &expected, &inv) {
            prop_assert!(false, "{}", why);
        }
    }
}

/// A graph with one bound Trident claim, one Pending claim and one stolen claim.
fn sample() -> (ClusterObjects, BTreeMap<(String, String), Option<OntapVolume>>) {
    objects(&Graph {
        pvs: vec![PvSource::Trident { known_backend: true }],
        claims: vec![(0, Binding::Bound(0)), (0, Binding::Pending), (0, Binding::Stolen(0))],
        pods: vec![(0, 1, 0, vec![Some(0), Some(1)]), (0, 2, 0, vec![Some(2)])],
    })
}

#[test]
fn the_checker_passes_the_real_inventory_of_the_sample() {
    let (objects, expected) = sample();
    check(&objects, &expected, &discovery::inventory(&objects)).unwrap();
}

#[test]
fn negative_control_a_claim_listed_twice_is_caught() {
    let (objects, expected) = sample();
    let mut inv = discovery::inventory(&objects);
    let dup = inv.claims[0].clone();
    inv.claims.push(dup);
    assert!(check(&objects, &expected, &inv).unwrap_err().contains("twice"));
}

#[test]
fn negative_control_a_guessed_volume_for_an_unbound_claim_is_caught() {
    let (objects, expected) = sample();
    let mut inv = discovery::inventory(&objects);
    // A "helpful" matcher that gives the stolen claim the volume its PV points at.
    let stolen = inv.claims.iter_mut().find(|c| c.pvc == "claim-2").unwrap();
    stolen.ontap = Some(OntapVolume { svm: "svm0".into(), volume: "trident_pv_0".into() });
    stolen.backing = Backing::Trident { internal_name: "trident_pv_0".into(), backend_uuid: None };
    let err = check(&objects, &expected, &inv).unwrap_err();
    assert!(err.contains("claim-2"), "{err}");
}

#[test]
fn negative_control_a_dropped_claim_is_caught() {
    let (objects, expected) = sample();
    let mut inv = discovery::inventory(&objects);
    inv.claims.retain(|c| c.pvc != "claim-1");
    assert!(check(&objects, &expected, &inv).is_err());
}
