//! Discovery against a fake API server with real object shapes, and the real ONTAP REST
//! client against ontap-sim for tracing NFS exports to volumes.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use ontap_client::{OntapClient, OntapConfig};
use ontap_sim::model::cluster::{Selector, VolumeCreate};
use ontap_sim::ClusterConfig;
use ontap_sim::SimConfig;
use serde_json::{json, Value};
use stasis_core::catalog::Catalog;
use stasis_core::domain::{AppKind, AppSpec, Policy, Schedule, FREEZE_TIMEOUT_DEFAULT};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_k8s::discovery::{Backing, CredentialRef, DbKind, OntapVolume};
use stasis_k8s::report::{self, Protection};
use stasis_k8s::{DiscoverOptions, KubeCluster};
use support::fixtures::*;
use support::{fixed, list, rule};

const CANARY: &str = "canary-pw-3f9a1c";

/// Two namespaces: a MariaDB Deployment on Trident, a PostgreSQL StatefulSet on NFS; plus a
/// web pod whose claim is Pending and an app whose claim's PV points at another claim.
#[allow(clippy::type_complexity)] // pods, claims, volumes, replica sets, Trident backends
fn objects() -> (Vec<Value>, Vec<Value>, Vec<Value>, Vec<Value>, Vec<Value>) {
    let pods = vec![
        pod("shop", "db-7d9f8c6b5-x2x9k", "docker.io/library/mariadb:10.11", Some(("ReplicaSet", "db-7d9f8c6b5")), &[("data", "db-data", "/var/lib/mysql")], secret_env("MARIADB_ROOT_PASSWORD", "db-secret", "root-password")),
        pod("crm", "pg-0", "postgres:16", Some(("StatefulSet", "pg")), &[("data", "data-pg-0", "/var/lib/postgresql/data")], json!([{"name": "POSTGRES_PASSWORD", "value": CANARY}])),
        pod("crm", "pg-1", "postgres:16", Some(("StatefulSet", "pg")), &[("data", "data-pg-1", "/var/lib/postgresql/data")], json!([{"name": "POSTGRES_PASSWORD", "value": CANARY}])),
        pod("web", "nginx-5c4f7", "nginx:1.27", None, &[("cache", "cache", "/cache")], json!([])),
        pod("web", "stolen-0", "mysql:8.0", Some(("StatefulSet", "stolen")), &[("d", "stolen-data", "/var/lib/mysql")], json!([])),
        pod("web", "static-0", "nginx:1.27", None, &[], json!([])),
    ];
    let pvcs = vec![
        pvc("shop", "db-data", Some("pvc-0b6f2c1e")),
        pvc("crm", "data-pg-0", Some("pv-nfs-pg0")),
        pvc("crm", "data-pg-1", Some("pv-nfs-pg1")),
        pvc("web", "cache", None),
        pvc("web", "stolen-data", Some("pvc-0b6f2c1e")),
    ];
    let pvs = vec![
        trident_pv("pvc-0b6f2c1e", Some(("shop", "db-data")), "trident_pvc_0b6f2c1e", TRIDENT_BACKEND_UUID),
        nfs_pv("pv-nfs-pg0", Some(("crm", "data-pg-0")), "192.0.2.20", "/pg0"),
        nfs_pv("pv-nfs-pg1", Some(("crm", "data-pg-1")), "192.0.2.20", "/shared"),
        other_csi_pv("pv-unused", None),
    ];
    let rs = vec![replica_set("shop", "db-7d9f8c6b5", "db")];
    let backends = vec![trident_backend(TRIDENT_BACKEND_UUID, "svm0")];
    (pods, pvcs, pvs, rs, backends)
}

fn all_namespace_rules() -> Vec<support::Rule> {
    let (pods, pvcs, pvs, rs, backends) = objects();
    vec![
        fixed("GET", "/api/v1/pods", 200, list("PodList", "v1", pods)),
        fixed("GET", "/api/v1/persistentvolumeclaims", 200, list("PersistentVolumeClaimList", "v1", pvcs)),
        fixed("GET", "/apis/apps/v1/replicasets", 200, list("ReplicaSetList", "apps/v1", rs)),
        fixed("GET", "/api/v1/persistentvolumes", 200, list("PersistentVolumeList", "v1", pvs)),
        fixed("GET", "/apis/trident.netapp.io/v1/tridentbackends", 200, list("TridentBackendList", "trident.netapp.io/v1", backends)),
    ]
}

/// A simulator with `/pg0` in svm0 and `/shared` in both svm0 and svm1.
async fn sim_storage() -> (ontap_sim::RunningSim, Arc<OntapClient>) {
    let sim = ontap_sim::spawn(SimConfig { cluster: ClusterConfig { svms: vec!["svm0".into(), "svm1".into()], ..Default::default() }, ..Default::default() })
        .await
        .expect("simulator starts on 127.0.0.1");
    for (name, svm, path) in [("pg0_data", "svm0", "/pg0"), ("shared_a", "svm0", "/shared"), ("shared_b", "svm1", "/shared"), ("other", "svm0", "/pg0x")] {
        let req = VolumeCreate {
            name: name.into(),
            svm: Selector { name: Some(svm.into()), uuid: None },
            aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
            size: Some(64 << 20),
            junction_path: Some(path.into()),
            ..Default::default()
        };
        sim.sim().transact(|s| s.create_volume(req, chrono::Utc::now())).expect("volume created");
    }
    let client = OntapClient::new(OntapConfig::new(sim.base_url(), "admin", "admin".to_string().into())).expect("client config");
    (sim, Arc::new(client))
}

#[tokio::test]
async fn trident_and_nfs_volumes_across_namespaces() {
    let (sim, storage) = sim_storage().await;
    let (client, fake) = support::client(all_namespace_rules());
    let cluster = KubeCluster::new(client, Some(storage), DiscoverOptions::default());
    let inv = cluster.inventory(None).await.expect("discovery succeeds");
    assert!(fake.unmatched().is_empty(), "{:?}", fake.unmatched());

    // Trident: internalName on the backend's SVM.
    let db = inv.claim("shop", "db-data").unwrap();
    assert_eq!(db.ontap, Some(OntapVolume { svm: "svm0".into(), volume: "trident_pvc_0b6f2c1e".into() }));
    // NFS: traced by junction path through the ONTAP API; `/pg0x` must not match `/pg0`.
    assert_eq!(inv.claim("crm", "data-pg-0").unwrap().ontap, Some(OntapVolume { svm: "svm0".into(), volume: "pg0_data".into() }));
    // `/shared` exists in two SVMs and the server is not mapped: reported, not guessed.
    let shared = inv.claim("crm", "data-pg-1").unwrap();
    assert_eq!(shared.ontap, None);
    assert!(shared.problem.as_deref().unwrap().contains("several SVMs"), "{shared:?}");
    // Pending and stolen claims are unbound, with the reason.
    assert!(matches!(&inv.claim("web", "cache").unwrap().backing, Backing::Unbound { reason } if reason.contains("Pending")));
    assert!(matches!(&inv.claim("web", "stolen-data").unwrap().backing, Backing::Unbound { reason } if reason.contains("bound to shop/db-data")));
    assert_eq!(inv.claims.len(), 5, "each mounted claim once; a pod without claims adds none");

    // Owners: the Deployment through its ReplicaSet, the StatefulSet directly, both pg pods in one app.
    let owners: Vec<(String, String, Option<DbKind>, usize)> = inv.apps.iter().map(|a| (a.namespace.clone(), format!("{}/{}", a.owner.kind, a.owner.name), a.db, a.pods.len())).collect();
    assert!(owners.contains(&("shop".into(), "Deployment/db".into(), Some(DbKind::Mariadb), 1)), "{owners:?}");
    assert!(owners.contains(&("crm".into(), "StatefulSet/pg".into(), Some(DbKind::Postgres), 2)), "{owners:?}");
    assert!(owners.contains(&("web".into(), "Pod/nginx-5c4f7".into(), None, 1)), "{owners:?}");

    // Credentials by reference; a literal password is flagged, never copied.
    let shop = inv.apps.iter().find(|a| a.namespace == "shop").unwrap();
    assert_eq!(shop.credentials, vec![CredentialRef::SecretKey { container: "db".into(), env: "MARIADB_ROOT_PASSWORD".into(), secret: "db-secret".into(), key: "root-password".into() }]);
    let crm = inv.apps.iter().find(|a| a.namespace == "crm").unwrap();
    assert_eq!(crm.credentials, vec![CredentialRef::PlainEnv { container: "db".into(), env: "POSTGRES_PASSWORD".into() }]);
    let rows = report::rows(&inv, None).unwrap();
    let json = serde_json::to_string(&report::DiscoverReport { rows: rows.clone(), inventory: inv.clone() }).unwrap();
    let yaml = serde_saphyr::to_string(&report::DiscoverReport { rows: rows.clone(), inventory: inv.clone() }).unwrap();
    let table = report::table(&rows, &inv.warnings);
    for out in [&json, &yaml, &table] {
        assert!(!out.contains(CANARY), "a password value leaked into discover output");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn mapping_the_nfs_server_to_its_svm_resolves_the_ambiguity_and_catalog_gives_protection() {
    let (sim, storage) = sim_storage().await;
    let (client, _fake) = support::client(all_namespace_rules());
    let options = DiscoverOptions { nfs_servers: BTreeMap::from([("192.0.2.20".to_string(), "svm1".to_string())]) };
    let cluster = KubeCluster::new(client, Some(storage), options);
    let inv = cluster.inventory(None).await.unwrap();
    assert_eq!(inv.claim("crm", "data-pg-1").unwrap().ontap, Some(OntapVolume { svm: "svm1".into(), volume: "shared_b".into() }));
    // With the server pinned to svm1, /pg0 (only in svm0) is no longer a match.
    assert!(inv.claim("crm", "data-pg-0").unwrap().problem.as_deref().unwrap().contains("no volume of SVM svm1"));

    let catalog = SqliteCatalog::open_in_memory().unwrap();
    catalog.put_app(&AppSpec { name: "shop-db".into(), kind: AppKind::Mysql, svm: "svm0".into(), volumes: vec!["trident_pvc_0b6f2c1e".into()], freeze_timeout: FREEZE_TIMEOUT_DEFAULT }).unwrap();
    catalog.put_policy(&Policy { name: "gold".into(), schedule: Schedule::Cron { expr: "0 * * * *".into() }, keep_last: Some(24), max_age: None }).unwrap();
    catalog.set_app_policy("shop-db", Some("gold")).unwrap();
    catalog.put_app(&AppSpec { name: "pg".into(), kind: AppKind::Postgres, svm: "svm1".into(), volumes: vec!["shared_b".into()], freeze_timeout: FREEZE_TIMEOUT_DEFAULT }).unwrap();
    let rows = report::rows(&inv, Some(&catalog)).unwrap();
    let by_pod = |p: &str| rows.iter().find(|r| r.pod == p).unwrap();
    assert_eq!((by_pod("db-7d9f8c6b5-x2x9k").status, by_pod("db-7d9f8c6b5-x2x9k").sla.as_deref()), (Protection::Protected, Some("gold")));
    assert_eq!(by_pod("pg-1").status, Protection::NoPolicy);
    assert_eq!(by_pod("pg-0").status, Protection::Unresolved);
    assert_eq!(by_pod("nginx-5c4f7").status, Protection::Unbound);
    let table = report::table(&rows, &inv.warnings);
    let header = table.lines().next().unwrap();
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["POD", "NAMESPACE", "MOUNT", "PATH", "VOLUME", "APP", "SLA", "STATUS"]);
    let db_line = table.lines().find(|l| l.starts_with("db-7d9f8c6b5-x2x9k")).expect("a row for the MariaDB pod");
    assert_eq!(db_line.split_whitespace().collect::<Vec<_>>(), ["db-7d9f8c6b5-x2x9k", "shop", "/var/lib/mysql", "svm0:trident_pvc_0b6f2c1e", "mariadb", "gold", "protected"]);
    assert!(table.contains("crm/pg-0 data-pg-0: no volume of SVM svm1"), "problems are listed under the table: {table}");
    sim.shutdown().await;
}

#[tokio::test]
async fn one_namespace_pages_through_lists_and_restarts_on_410_gone() {
    let (pods, pvcs, pvs, rs, _) = objects();
    let shop_pods: Vec<Value> = pods.into_iter().filter(|p| p["metadata"]["namespace"] == "shop").collect();
    let mut first_page = list("PodList", "v1", vec![]);
    first_page["metadata"]["continue"] = json!("eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDgyMTN9");
    let mut served_first = 0;
    let rules = vec![
        // First listing: page 1 (empty, with a token), then the token has expired (410).
        rule("GET", "/api/v1/namespaces/shop/pods", move |r| {
            if r.query.contains("continue=") {
                return (410, support::status(410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."));
            }
            served_first += 1;
            if served_first == 1 {
                (200, first_page.clone())
            } else {
                (200, list("PodList", "v1", shop_pods.clone()))
            }
        }),
        fixed("GET", "/api/v1/namespaces/shop/persistentvolumeclaims", 200, list("PersistentVolumeClaimList", "v1", pvcs.into_iter().filter(|p| p["metadata"]["namespace"] == "shop").collect())),
        fixed("GET", "/apis/apps/v1/namespaces/shop/replicasets", 200, list("ReplicaSetList", "apps/v1", rs)),
        fixed("GET", "/api/v1/persistentvolumes", 200, list("PersistentVolumeList", "v1", pvs)),
        // Trident not installed: the CRD's path answers 404.
        fixed("GET", "/apis/trident.netapp.io/v1/tridentbackends", 404, support::status(404, "NotFound", "the server could not find the requested resource")),
    ];
    let (client, fake) = support::client(rules);
    let cluster = KubeCluster::new(client, None, DiscoverOptions::default());
    let inv = cluster.inventory(Some("shop")).await.expect("discovery restarts the listing after 410");
    assert!(fake.unmatched().is_empty(), "{:?}", fake.unmatched());
    let pod_requests: Vec<String> = fake.lines().into_iter().filter(|l| l.contains("/pods")).collect();
    assert_eq!(pod_requests.len(), 3, "page 1, expired page 2, fresh listing: {pod_requests:?}");
    assert!(pod_requests.iter().all(|l| l.contains("limit=500")));
    assert_eq!(inv.apps.len(), 1);
    // Without a TridentBackend the SVM is unknown: said so, not guessed.
    let claim = inv.claim("shop", "db-data").unwrap();
    assert_eq!(claim.ontap, None);
    assert!(claim.problem.as_deref().unwrap().contains(TRIDENT_BACKEND_UUID));
}

#[tokio::test]
async fn a_forbidden_list_is_a_clear_error() {
    let rules = vec![fixed(
        "GET",
        "/api/v1/pods",
        403,
        support::status(403, "Forbidden", "pods is forbidden: User \"system:serviceaccount:stasis:stasis\" cannot list resource \"pods\" in API group \"\" at the cluster scope"),
    )];
    let (client, _fake) = support::client(rules);
    let err = KubeCluster::new(client, None, DiscoverOptions::default()).inventory(None).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("listing pods") && text.contains("403") && text.contains("cannot list resource"), "{text}");
}
