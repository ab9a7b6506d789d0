//! Shared by the root package's suites: a simulated cluster on loopback with an app's
//! volumes, and a config file pointing at it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ontap_sim::model::cluster::{ClusterConfig, Selector, VolumeCreate};
use ontap_sim::{RunningSim, SimConfig};

pub const SVM: &str = "svm0";
pub const PASSWORD: &str = "canary-pw-5f1e2d";

pub struct Site {
    pub sim: RunningSim,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

/// A simulator with volumes `bank_data` and `bank_log` (junction paths /bank/data and
/// /bank/log), and a config with app `bank` (kind simdb) on them plus `extra_yaml` appended
/// to the apps list.
pub async fn site(extra_apps_yaml: &str) -> Site {
    let sim = ontap_sim::spawn(SimConfig {
        cluster: ClusterConfig { name: "sim-a".into(), svms: vec![SVM.into()], aggregate: "aggr1".into(), seed: 7, ..ClusterConfig::default() },
        username: "admin".into(),
        password: PASSWORD.into(),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    for (name, path) in [("bank_data", "/bank/data"), ("bank_log", "/bank/log")] {
        create_volume(&sim, name, path);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ontap.pw"), format!("{PASSWORD}\n")).unwrap();
    let config = dir.path().join("stasis.yaml");
    std::fs::write(&config, config_text(&sim.base_url(), extra_apps_yaml)).unwrap();
    Site { sim, dir, config }
}

pub fn create_volume(sim: &RunningSim, name: &str, path: &str) -> String {
    let req = VolumeCreate {
        name: name.into(),
        svm: Selector { name: Some(SVM.into()), uuid: None },
        aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
        size: Some(256 << 20),
        junction_path: Some(path.into()),
        ..Default::default()
    };
    sim.sim().transact(|s| s.create_volume(req, chrono::Utc::now())).expect("volume created")
}

pub fn config_text(url: &str, extra_apps_yaml: &str) -> String {
    format!(
        r#"clusters:
  - name: site-a
    url: {url}
    username: admin
    password_file: ontap.pw
apps:
  - name: bank
    kind: simdb
    cluster: site-a
    svm: {SVM}
    volumes: [bank_data, bank_log]
    freeze_timeout: 2s
{extra_apps_yaml}
policies:
  - name: hourly
    cron: "0 * * * *"
    keep_last: 24
  - name: daily
    cron: "30 2 * * *"
    keep_last: 7
catalog: catalog.sqlite
"#
    )
}

pub fn stasis_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_stasis"))
}

/// The server's registry over the site's simulator, in process: app `bank` is the
/// simulated database on bank_data + bank_log (through the simulator's in-process data
/// plane, as `stasis demo` hosts it), with the SQLite catalog in the site's directory.
pub async fn registry(site: &Site) -> (stasis::server::Registry, std::sync::Arc<stasis_core::plugins::simdb::SimDb>) {
    use std::sync::Arc;
    use stasis_core::catalog::Catalog;
    use stasis_core::plugins::simdb::{SimDb, SimDbVolumes};

    let mut config = ontap_client::OntapConfig::new(site.sim.base_url(), "admin", ontap_client::SecretString::from(PASSWORD.to_string()));
    config.job_poll_interval = std::time::Duration::from_millis(5);
    let client = Arc::new(ontap_client::OntapClient::new(config).expect("client"));
    let volumes = client.volumes_by_name(SVM, &["bank_data".to_string(), "bank_log".to_string()]).await.expect("volumes");
    let data = Arc::new(stasis_scenarios::sim_data::SimVolumeData::new(site.sim.sim().clone()));
    let db = Arc::new(SimDb::create(data, SimDbVolumes::from_volume_infos(&volumes).unwrap(), &[0; 16], false, Arc::new(stasis_core::clock::SystemClock)).expect("simdb"));
    let catalog = Arc::new(stasis_core::sqlite_catalog::SqliteCatalog::open(site.dir.path().join("catalog.sqlite")).expect("catalog"));
    let spec = stasis_core::domain::AppSpec {
        name: "bank".into(),
        kind: stasis_core::domain::AppKind::Simdb,
        svm: SVM.into(),
        volumes: vec!["bank_data".into(), "bank_log".into()],
        freeze_timeout: std::time::Duration::from_secs(2),
    };
    catalog.put_app(&spec).unwrap();
    for (name, expr) in [("hourly", "0 * * * *"), ("daily", "30 2 * * *")] {
        catalog.put_policy(&stasis_core::domain::Policy { name: name.into(), schedule: stasis_core::domain::Schedule::Cron { expr: expr.into() }, keep_last: Some(24), max_age: None }).unwrap();
    }
    let orchestrator = stasis_core::workflow::Orchestrator::new(client, catalog.clone(), Arc::new(stasis_core::clock::SystemClock));
    let plugin: Arc<dyn stasis_core::plugin::AppPlugin> = db.clone();
    let mut handle = stasis::server::AppHandle::new(spec, "site-a", orchestrator, Ok(plugin));
    handle.namespace = "finance".into();
    handle.workload = "bank-0".into();
    (stasis::server::Registry { apps: vec![handle], catalog, title: "test".into() }, db)
}

pub const TOKEN: &str = "test-token-0123456789abcdef";
