//! Keeping every volume that has a junction path mounted at `<root>/<junction path>`.
//!
//! The simulator has no change notifications, so the manager reconciles: it reads every
//! volume's junction path under the lock (cheap) and mounts or unmounts to match, on each
//! tick of a watcher thread ([`MountManager::start`], a bounded interval) and whenever a
//! caller that needs the mount at once calls [`MountManager::reconcile`].

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;

use super::mount::{check_prerequisites, mount_with, MountHandle, MountOptions};
use crate::sim::Simulator;

struct Mounted {
    junction: String,
    handle: MountHandle,
    /// The mount point directory did not exist before: remove it after unmounting.
    created_dir: bool,
}

struct Inner {
    sim: Simulator,
    root: PathBuf,
    opts: MountOptions,
    mounts: Mutex<BTreeMap<String, Mounted>>,
    /// Problems already logged, so that a watcher does not repeat them every tick.
    warned: Mutex<HashSet<String>>,
    stop: AtomicBool,
}

/// Mounts of one simulator's volumes under one root directory. Dropping it (or
/// [`MountManager::shutdown`]) unmounts everything.
pub struct MountManager {
    inner: Arc<Inner>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

fn is_under(path: &str, prefix: &str) -> bool {
    path.len() > prefix.len() && path.starts_with(prefix) && path.as_bytes()[prefix.len()] == b'/'
}

impl Inner {
    fn warn_once(&self, message: String) {
        if self.warned.lock().insert(message.clone()) {
            tracing::warn!("{message}");
        }
    }

    fn mount_point(&self, junction: &str) -> PathBuf {
        self.root.join(junction.trim_start_matches('/'))
    }

    fn reconcile(&self) -> Vec<anyhow::Error> {
        let mut errors = Vec::new();
        // Read what is wanted under the mounts lock: a reconcile that read it earlier and
        // waited for the lock would unmount a volume another reconcile had just mounted.
        let mut mounts = self.mounts.lock();
        let wanted: BTreeMap<String, String> = self.sim.read(|s| s.volumes.values().filter_map(|v| v.junction_path.clone().map(|p| (v.uuid.clone(), p))).collect());
        let gone: Vec<String> = mounts.iter().filter(|(uuid, m)| wanted.get(*uuid) != Some(&m.junction)).map(|(uuid, _)| uuid.clone()).collect();
        for uuid in gone {
            let m = mounts.remove(&uuid).expect("listed above");
            let dir = m.handle.path().to_path_buf();
            if let Err(e) = m.handle.unmount() {
                errors.push(e);
                continue;
            }
            if m.created_dir {
                let _ = std::fs::remove_dir(&dir);
            }
        }
        for (uuid, junction) in &wanted {
            if mounts.contains_key(uuid) {
                continue;
            }
            // A junction below another volume's would need its mount point inside that volume.
            if let Some(outer) = wanted.values().find(|other| is_under(junction, other)) {
                self.warn_once(format!("not mounting {junction}: nested junction paths (below {outer}) are not supported"));
                continue;
            }
            let dir = self.mount_point(junction);
            let created_dir = !dir.exists();
            match mount_with(&self.sim, uuid, &dir, &self.opts) {
                Ok(handle) => {
                    mounts.insert(uuid.clone(), Mounted { junction: junction.clone(), handle, created_dir });
                }
                Err(e) => {
                    if created_dir {
                        let _ = std::fs::remove_dir(&dir);
                    }
                    errors.push(e.context(format!("mounting {junction}")));
                }
            }
        }
        errors
    }

    fn unmount_all(&self) {
        let mounts = std::mem::take(&mut *self.mounts.lock());
        for (_, m) in mounts {
            let dir = m.handle.path().to_path_buf();
            if let Err(e) = m.handle.unmount() {
                tracing::error!(error = %e, "unmounting");
            } else if m.created_dir {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

impl MountManager {
    /// A manager mounting under `root` (created if missing). Mounts nothing yet: call
    /// [`MountManager::reconcile`] and/or [`MountManager::start`].
    pub fn new(sim: Simulator, root: impl AsRef<Path>, opts: MountOptions) -> anyhow::Result<Self> {
        check_prerequisites()?;
        let root = root.as_ref();
        std::fs::create_dir_all(root).with_context(|| format!("creating the mount root {}", root.display()))?;
        let root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
        Ok(MountManager {
            inner: Arc::new(Inner { sim, root, opts, mounts: Mutex::new(BTreeMap::new()), warned: Mutex::new(HashSet::new()), stop: AtomicBool::new(false) }),
            watcher: Mutex::new(None),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the volume with junction path `junction` is (or would be) mounted.
    pub fn mount_point(&self, junction: &str) -> PathBuf {
        self.inner.mount_point(junction)
    }

    /// Mount every volume that has a junction path and is not mounted; unmount those
    /// deleted or whose path went or changed. Returns what failed (and keeps going).
    pub fn reconcile(&self) -> Vec<anyhow::Error> {
        self.inner.reconcile()
    }

    /// (volume uuid, mount point) of every current mount.
    pub fn mounted(&self) -> Vec<(String, PathBuf)> {
        self.inner.mounts.lock().iter().map(|(uuid, m)| (uuid.clone(), m.handle.path().to_path_buf())).collect()
    }

    /// Unmount and mount again one volume: a fresh mount after a SnapRestore, with nothing
    /// cached by the kernel.
    pub fn remount(&self, volume_uuid: &str) -> anyhow::Result<PathBuf> {
        let mut mounts = self.inner.mounts.lock();
        let m = mounts.remove(volume_uuid).with_context(|| format!("volume {volume_uuid} is not mounted"))?;
        let dir = m.handle.path().to_path_buf();
        m.handle.unmount()?;
        let handle = mount_with(&self.inner.sim, volume_uuid, &dir, &self.inner.opts)?;
        mounts.insert(volume_uuid.to_string(), Mounted { junction: m.junction, handle, created_dir: m.created_dir });
        Ok(dir)
    }

    /// Reconcile every `interval` on a thread of its own until shutdown.
    pub fn start(&self, interval: Duration) {
        let mut watcher = self.watcher.lock();
        if watcher.is_some() {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        *watcher = Some(
            std::thread::Builder::new()
                .name("ontap-sim-mounts".into())
                .spawn(move || loop {
                    std::thread::sleep(interval);
                    let Some(inner) = weak.upgrade() else { return };
                    if inner.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    for e in inner.reconcile() {
                        inner.warn_once(format!("{e:#}"));
                    }
                })
                .expect("spawning the mount watcher"),
        );
    }

    /// Stop the watcher and unmount everything.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(watcher) = self.watcher.lock().take() {
            let _ = watcher.join();
        }
        self.inner.unmount_all();
    }
}

impl Drop for MountManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}
