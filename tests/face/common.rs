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
