//! The running simulator: one cluster's state behind a lock, its fault rules and its clock.
//!
//! This is also the in-process API: tests and the harness call [`Simulator`] directly for
//! data-plane reads and writes and for faults, and reach the ONTAP API over real HTTP.

use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::control::faults::FaultInjector;
use crate::error::{OntapError, SimResult};
use crate::model::cluster::{ClusterConfig, ClusterState};
use crate::model::fs::FileType;
use crate::model::volume::{self, Volume};

/// Time as the simulator sees it; injectable so seeded runs can control it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<ClusterState>,
    faults: FaultInjector,
    clock: Arc<dyn Clock>,
    /// Where other simulators reach this one (`IP:PORT`), known once it listens.
    address: Mutex<Option<String>>,
    /// Client for intercluster calls (peering, SnapMirror transfers).
    http: reqwest::Client,
    /// Per-volume lock held across a write and its synchronous replication, so the
    /// destination applies writes in the source's order.
    sync_locks: Mutex<std::collections::HashMap<String, Arc<Mutex<()>>>>,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DirEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
}

impl Simulator {
    pub fn new(config: &ClusterConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: &ClusterConfig, clock: Arc<dyn Clock>) -> Self {
        Simulator {
            inner: Arc::new(Inner {
                state: Mutex::new(ClusterState::new(config)),
                faults: FaultInjector::new(config.seed),
                clock,
                address: Mutex::new(None),
                http: reqwest::Client::builder()
                    .connect_timeout(crate::replication::CONNECT_TIMEOUT)
                    .build()
                    .expect("building the intercluster HTTP client"),
                sync_locks: Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn now_system(&self) -> SystemTime {
        self.now().into()
    }

    /// The address other simulators use to reach this one (set by `server::spawn_with`).
    pub fn address(&self) -> Option<String> {
        self.inner.address.lock().clone()
    }

    pub fn set_address(&self, address: String) {
        *self.inner.address.lock() = Some(address);
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn sync_lock(&self, volume_uuid: &str) -> Arc<Mutex<()>> {
        self.inner.sync_locks.lock().entry(volume_uuid.to_string()).or_default().clone()
    }

    pub fn faults(&self) -> &FaultInjector {
        &self.inner.faults
    }

    /// Read the state under the lock.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&self.inner.state.lock())
    }

    /// Run `f` on a copy of the state and keep the copy only if `f` succeeds: a failed
    /// operation leaves nothing half-changed. The copy is cheap (persistent maps).
    pub fn transact<T>(&self, f: impl FnOnce(&mut ClusterState) -> SimResult<T>) -> SimResult<T> {
        let mut state = self.inner.state.lock();
        let mut next = state.clone();
        let value = f(&mut next)?;
        *state = next;
        Ok(value)
    }

    /// Would `f` succeed now? Runs it on a copy and throws the copy away.
    pub fn dry_run<T>(&self, f: impl FnOnce(&mut ClusterState) -> SimResult<T>) -> SimResult<T> {
        let mut copy = self.inner.state.lock().clone();
        f(&mut copy)
    }

    /// Mutate one volume in place (data plane): the volume methods are themselves
    /// all-or-nothing, and copying the cluster per write would waste work.
    ///
    /// A write to the source of an in-sync SnapMirror Sync relationship returns only once
    /// the destination applied it; with StrictSync a write the destination did not take is
    /// undone and fails, with Sync the relationship falls out of sync and the write stands.
    pub fn with_volume_mut<T>(&self, uuid: &str, f: impl FnOnce(&mut Volume) -> SimResult<T>) -> SimResult<T> {
        if !self.read(|s| s.sync_sources.contains_key(uuid)) {
            let mut state = self.inner.state.lock();
            return f(state.volume_mut(uuid)?);
        }
        // One write at a time per Sync source, so the destination sees the source's order.
        let serial = self.sync_lock(uuid);
        let _serial = serial.lock();
        let (value, before, forward) = {
            let mut state = self.inner.state.lock();
            let before = state.volume(uuid)?.clone();
            let value = f(state.volume_mut(uuid)?)?;
            (value, before, crate::replication::sync::prepare(&state, uuid))
        };
        let Some(forward) = forward else { return Ok(value) };
        let sent = crate::replication::sync::send(&forward);
        let mut state = self.inner.state.lock();
        match sent {
            Ok(()) => {
                if let Some(source) = state.sync_sources.get_mut(uuid) {
                    source.base = forward.new_base;
                }
                Ok(value)
            }
            Err(e) if forward.strict => {
                state.volumes.insert(uuid.to_string(), before);
                Err(OntapError::new(crate::error::ErrorKind::Unavailable, 13303829, format!("StrictSync: the write was not replicated, so it was not applied: {e}.")))
            }
            Err(e) => {
                tracing::info!(volume = %uuid, error = %e, "SnapMirror Sync relationship out of sync");
                if let Some(source) = state.sync_sources.get_mut(uuid) {
                    source.in_sync = false;
                }
                Ok(value)
            }
        }
    }

    pub fn with_volume<T>(&self, uuid: &str, f: impl FnOnce(&Volume) -> SimResult<T>) -> SimResult<T> {
        let state = self.inner.state.lock();
        f(state.volume(uuid)?)
    }

    /// The uuid of the volume named `name` (in any SVM; names are unique per SVM).
    pub fn volume_uuid(&self, svm: &str, name: &str) -> SimResult<String> {
        self.read(|s| s.volumes.values().find(|v| v.name == name && v.svm.name == svm).map(|v| v.uuid.clone()))
            .ok_or_else(|| OntapError::not_found(&format!("volume {svm}:{name}")))
    }

    // ---- data plane ----

    pub fn write_file(&self, volume_uuid: &str, path: &str, offset: u64, data: &[u8]) -> SimResult<()> {
        let now = self.now_system();
        self.with_volume_mut(volume_uuid, |v| v.write_file(path, offset, data, now))
    }

    pub fn put_file(&self, volume_uuid: &str, path: &str, data: &[u8]) -> SimResult<()> {
        let now = self.now_system();
        self.with_volume_mut(volume_uuid, |v| v.put_file(path, data, now))
    }

    pub fn read_file(&self, volume_uuid: &str, path: &str, offset: u64, len: Option<u64>) -> SimResult<Vec<u8>> {
        self.with_volume(volume_uuid, |v| volume::read_file(&v.fs, path, offset, len))
    }

    pub fn read_snapshot_file(&self, volume_uuid: &str, snapshot: &str, path: &str, offset: u64, len: Option<u64>) -> SimResult<Vec<u8>> {
        self.with_volume(volume_uuid, |v| {
            let snap = v.snapshot_by_name(snapshot).ok_or_else(|| OntapError::not_found(&format!("snapshot {snapshot}")))?;
            volume::read_file(&snap.fs, path, offset, len)
        })
    }

    pub fn list_dir(&self, volume_uuid: &str, snapshot: Option<&str>, path: &str) -> SimResult<Vec<DirEntry>> {
        self.with_volume(volume_uuid, |v| {
            let fs = match snapshot {
                Some(name) => &v.snapshot_by_name(name).ok_or_else(|| OntapError::not_found(&format!("snapshot {name}")))?.fs,
                None => &v.fs,
            };
            Ok(volume::list_dir(fs, path)?
                .into_iter()
                .map(|(name, kind, size)| DirEntry {
                    name,
                    kind: match kind {
                        FileType::File => "file",
                        FileType::Dir => "directory",
                        FileType::Symlink => "symlink",
                    },
                    size,
                })
                .collect())
        })
    }

    pub fn truncate_file(&self, volume_uuid: &str, path: &str, size: u64) -> SimResult<()> {
        let now = self.now_system();
        self.with_volume_mut(volume_uuid, |v| v.truncate_file(path, size, now))
    }

    pub fn remove_file(&self, volume_uuid: &str, path: &str) -> SimResult<()> {
        let now = self.now_system();
        self.with_volume_mut(volume_uuid, |v| v.remove_file(path, now))
    }

    pub fn rename_file(&self, volume_uuid: &str, from: &str, to: &str) -> SimResult<()> {
        let now = self.now_system();
        self.with_volume_mut(volume_uuid, |v| v.rename(from, to, now))
    }

    pub fn fill(&self, volume_uuid: &str, path: &str, bytes: u64, seed: u64) -> SimResult<()> {
        let now = self.now_system();
        self.with_volume_mut(volume_uuid, |v| v.fill(path, bytes, seed, now))
    }
}
