//! Conformance: NetApp's official Python client (`netapp-ontap`, PyPI) drives the
//! ONTAP simulator over real HTTP.
//!
//! Starts `ontap-sim` in-process on 127.0.0.1 (port 0), then runs
//! `.venv/bin/python -m pytest -q tests/conformance` from the repository root with
//! `ONTAP_SIM_HOST`, `ONTAP_SIM_PORT` and `ONTAP_SIM_SCHEME` set, and requires pytest
//! to exit 0. pytest's output is forwarded (libtest shows it when this test fails,
//! or always with `--nocapture`).
//!
//! The virtualenv comes from `bash ci/install.sh`; without it this test fails, it never
//! skips. Extra pytest arguments can be passed through `CONFORMANCE_PYTEST_ARGS`
//! (whitespace-separated, e.g. `CONFORMANCE_PYTEST_ARGS="-k flexclone -x"`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};

/// Upper bound for the whole pytest run; the suite normally takes well under a minute.
const PYTEST_TIMEOUT: Duration = Duration::from_secs(600);

fn repo_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netapp_ontap_client_conformance() -> anyhow::Result<()> {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        panic!(
            "{} is missing: the conformance suite needs the pinned Python client. \
             Run `bash ci/install.sh` from the repository root (ci/test.sh does it), then re-run.",
            python.display()
        );
    }

    let sim = ontap_sim::server::spawn(ontap_sim::SimConfig::default())
        .await
        .context("starting ontap-sim")?;
    let addr = sim.addr();
    // A second cluster for the disaster-recovery tests (test_snapmirror.py).
    let site_b = ontap_sim::server::spawn(ontap_sim::SimConfig {
        cluster: ontap_sim::ClusterConfig { name: "sim-b".into(), svms: vec!["svm1".into()], ..ontap_sim::ClusterConfig::default() },
        ..ontap_sim::SimConfig::default()
    })
    .await
    .context("starting the second ontap-sim (sim-b)")?;

    let mut cmd = tokio::process::Command::new(&python);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/conformance"])
        .current_dir(&root)
        .env("ONTAP_SIM_HOST", addr.ip().to_string())
        .env("ONTAP_SIM_PORT", addr.port().to_string())
        .env("ONTAP_SIM_SCHEME", "http")
        .env("ONTAP_SIM_B_PORT", site_b.addr().port().to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Ok(extra) = std::env::var("CONFORMANCE_PYTEST_ARGS") {
        cmd.args(extra.split_whitespace());
    }

    let run = cmd.output();
    let output = match tokio::time::timeout(PYTEST_TIMEOUT, run).await {
        Ok(result) => result.with_context(|| format!("running {} -m pytest", python.display()))?,
        Err(_) => {
            sim.shutdown().await;
            bail!("pytest did not finish within {PYTEST_TIMEOUT:?} (killed)");
        }
    };

    // Forward pytest's output through libtest's capture.
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));

    sim.shutdown().await;
    site_b.shutdown().await;

    match output.status.code() {
        Some(0) => Ok(()),
        Some(5) => bail!("pytest collected no tests from tests/conformance (exit 5)"),
        Some(code) => bail!("netapp-ontap conformance suite failed: pytest exited with {code}"),
        None => bail!("pytest was killed by a signal: {}", output.status),
    }
}
