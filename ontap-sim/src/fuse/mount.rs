//! Mounting one volume, and making sure it is unmounted again whatever happens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fuser::{BackgroundSession, Config, INodeNo, MountOption, Notifier, SessionACL};
use parking_lot::Mutex;

use super::vfs::VolumeFs;
use crate::sim::Simulator;

/// How a volume is mounted.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// How long the kernel may cache attributes and entries of the active file system and of
    /// `.snapshot` itself. 0 (the default): changes through the REST or control API show at once.
    pub ttl: Duration,
    /// The same for nodes inside a snapshot, which never change (default 60 s).
    pub snapshot_ttl: Duration,
    /// Bypass the page cache for every open, not only `O_DIRECT` ones (no shared `mmap`).
    pub direct_io: bool,
    /// List `.snapshot` in the root's `readdir` (it is always reachable by name).
    pub list_snapshot_dir: bool,
    /// Threads serving FUSE requests (each request holds the simulator's lock briefly).
    pub threads: usize,
    /// Let every user in (`allow_other`): MariaDB runs as `mysql`, not as the mounter. Modes
    /// are enforced by the kernel (`default_permissions`).
    pub allow_other: bool,
    /// Let `fusermount3` unmount the volume if this process dies without unmounting.
    pub auto_unmount: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { ttl: Duration::ZERO, snapshot_ttl: Duration::from_secs(60), direct_io: false, list_snapshot_dir: false, threads: 4, allow_other: true, auto_unmount: true }
    }
}

const FUSERMOUNT: &str = "fusermount3";
/// How long an unmount may take before the lazy fallback, and again after it.
const UNMOUNT_WAIT: Duration = Duration::from_secs(3);
/// How long to wait for the serving threads once the mount is gone (files still open on a
/// lazily unmounted volume keep them serving; they are then left to finish on their own).
const JOIN_WAIT: Duration = Duration::from_secs(3);

fn find_in_path(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(binary)).find(|p| p.is_file()))
}

/// Is FUSE usable here? An error names what is missing and how to get it.
pub fn check_prerequisites() -> anyhow::Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!("FUSE is not available: /dev/fuse is missing (load the fuse kernel module, or give the container the device: --device /dev/fuse --cap-add SYS_ADMIN)");
    }
    if find_in_path(FUSERMOUNT).is_none() {
        bail!("FUSE is not available: `{FUSERMOUNT}` is not on PATH (install the Debian package fuse3: ci/install.sh does)");
    }
    Ok(())
}

/// `/proc/self/mountinfo` escapes these characters in paths.
fn mountinfo_escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Is something mounted exactly at `dir` (an absolute, canonical path)?
pub(crate) fn is_mount_point(dir: &Path) -> bool {
    let wanted = mountinfo_escape(dir);
    std::fs::read_to_string("/proc/self/mountinfo").map(|info| info.lines().any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))).unwrap_or(false)
}

fn wait_unmounted(dir: &Path, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if !is_mount_point(dir) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Unmount `dir` now; false if that failed (e.g. busy).
fn plain_unmount(dir: &Path) -> bool {
    Command::new(FUSERMOUNT).args(["-u", "-q", "--"]).arg(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// Detach whatever is mounted at `dir` now; it goes away once nothing uses it.
pub(crate) fn lazy_unmount(dir: &Path) {
    let quiet = |cmd: &mut Command| cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
    if !quiet(Command::new(FUSERMOUNT).args(["-u", "-z", "-q", "--"]).arg(dir)) {
        quiet(Command::new("umount").arg("-l").arg(dir));
    }
}

/// A mounted volume. Dropping it unmounts (lazily if the mount is busy).
pub struct MountHandle {
    dir: PathBuf,
    volume_uuid: String,
    session: Option<BackgroundSession>,
    notifier: Notifier,
    known: Arc<Mutex<HashMap<u64, u64>>>,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle").field("dir", &self.dir).field("volume_uuid", &self.volume_uuid).finish()
    }
}

/// Mount volume `volume_uuid` of `sim` at `dir` (created if missing) with default options.
pub fn mount(sim: &Simulator, volume_uuid: &str, dir: impl AsRef<Path>) -> anyhow::Result<MountHandle> {
    mount_with(sim, volume_uuid, dir, &MountOptions::default())
}

pub fn mount_with(sim: &Simulator, volume_uuid: &str, dir: impl AsRef<Path>, opts: &MountOptions) -> anyhow::Result<MountHandle> {
    check_prerequisites()?;
    let dir = dir.as_ref();
    let (svm, name) = sim.with_volume(volume_uuid, |v| Ok((v.svm.name.clone(), v.name.clone()))).map_err(|e| anyhow::anyhow!("mounting volume {volume_uuid}: {e}"))?;
    // A mount left behind by a dead process answers "Transport endpoint is not connected".
    if let Err(e) = std::fs::metadata(dir) {
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            lazy_unmount(dir);
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating the mount point {}", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    if is_mount_point(&dir) {
        bail!("{} is already a mount point", dir.display());
    }
    let mut config = Config::default();
    let fsname = format!("ontap-sim:{svm}:{name}").replace([',', ' '], "_");
    config.mount_options = vec![MountOption::FSName(fsname), MountOption::Subtype("ontap-sim".into()), MountOption::DefaultPermissions, MountOption::NoSuid, MountOption::NoDev, MountOption::RW];
    config.acl = if opts.allow_other { SessionACL::All } else { SessionACL::Owner };
    if opts.auto_unmount {
        config.mount_options.push(MountOption::AutoUnmount);
        if config.acl == SessionACL::Owner {
            // fusermount3 wants allow_other or allow_root for auto_unmount; fuser then lets
            // only root and the owner in.
            config.acl = SessionACL::RootAndOwner;
        }
    }
    config.n_threads = Some(opts.threads.max(1));
    let known = Arc::new(Mutex::new(HashMap::new()));
    let fs = VolumeFs::new(sim.clone(), volume_uuid.to_string(), opts.clone(), known.clone());
    let session = fuser::spawn_mount(fs, &dir, &config).with_context(|| format!("mounting volume {svm}:{name} at {}", dir.display()))?;
    let notifier = session.notifier();
    tracing::info!(volume = %name, svm = %svm, dir = %dir.display(), "mounted");
    Ok(MountHandle { dir, volume_uuid: volume_uuid.to_string(), session: Some(session), notifier, known })
}

impl MountHandle {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn volume_uuid(&self) -> &str {
        &self.volume_uuid
    }

    /// Drop the kernel's cached pages and attributes of every inode it holds from this
    /// mount (e.g. after an in-place SnapRestore). Returns how many inodes were invalidated.
    /// Must not be called from inside a request to this mount.
    pub fn invalidate_cache(&self) -> usize {
        let inodes: Vec<u64> = self.known.lock().keys().copied().collect();
        let mut n = 0;
        for ino in std::iter::once(fuser::INodeNo::ROOT.0).chain(inodes) {
            // ENOENT: the kernel already forgot it.
            if self.notifier.inval_inode(INodeNo(ino), 0, 0).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Unmount; an error means the mount point is still mounted even after a lazy unmount.
    pub fn unmount(mut self) -> anyhow::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> anyhow::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        // Unmount explicitly first: fusermount3's auto_unmount only acts once the file
        // system is dead (ENOTCONN), and ours still answers until the mount is gone.
        if !plain_unmount(&self.dir) || !wait_unmounted(&self.dir, UNMOUNT_WAIT) {
            tracing::warn!(dir = %self.dir.display(), "the mount is busy; unmounting lazily");
            lazy_unmount(&self.dir);
        }
        // Taking the thread out drops the rest of the session (the auto_unmount socket:
        // fusermount3 then exits).
        let guard: JoinHandle<std::io::Result<()>> = {
            let session = session;
            session.guard
        };
        if !wait_unmounted(&self.dir, UNMOUNT_WAIT) {
            lazy_unmount(&self.dir);
            if !wait_unmounted(&self.dir, UNMOUNT_WAIT) {
                bail!("{} is still mounted after a lazy unmount", self.dir.display());
            }
        }
        let deadline = Instant::now() + JOIN_WAIT;
        while !guard.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if guard.is_finished() {
            match guard.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(dir = %self.dir.display(), error = %e, "FUSE session ended with an error"),
                Err(_) => tracing::warn!(dir = %self.dir.display(), "FUSE session thread panicked"),
            }
        } else {
            tracing::warn!(dir = %self.dir.display(), "files are still open on the lazily unmounted volume; its FUSE threads serve them until closed");
        }
        tracing::info!(dir = %self.dir.display(), "unmounted");
        Ok(())
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::error!(error = %e, "unmounting");
        }
    }
}
