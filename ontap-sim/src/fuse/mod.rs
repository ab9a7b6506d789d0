//! The FUSE data plane: a simulated volume mounted as a real file system, so that real
//! processes (MariaDB) keep their files on it.
//!
//! Every FUSE request is served from the volume's copy-on-write tree under the simulator's
//! one lock ([`crate::Simulator::with_volume`] / [`crate::Simulator::with_volume_mut`]): the
//! same tree the REST API, the control API and the in-process data plane use. A snapshot
//! taken by any of them is therefore atomic across every file of the mount.
//!
//! Pure Rust (the `fuser` crate without libfuse): it needs `/dev/fuse` and, for unmounting
//! and auto-unmount, the `fusermount3` binary (Debian package `fuse3`, installed by
//! `ci/install.sh`). [`check_prerequisites`] says which is missing.
//!
//! # Inode numbers
//! A FUSE inode number packs which tree a node belongs to and its inode in that tree:
//!
//! ```text
//!   bits 63..40 (slot)   bits 39..0
//!   0                    the active file system's inode number (root = 1)
//!   1                    1: the `.snapshot` directory (no other value is used)
//!   epoch + 2            inode number in the tree of the snapshot taken at ledger `epoch`
//! ```
//!
//! Tree inode numbers are never reused in a volume's history (SnapRestore included) and
//! snapshot epochs are never reused either, so a FUSE inode number always names the same
//! object (generation 0). A snapshot deleted and re-created under the same name gets a new
//! epoch, hence new numbers. Limits: 2^40 inodes per volume history, 2^24 - 2 snapshot
//! epochs per volume history; nodes beyond them are refused with `EOVERFLOW`.
//!
//! # `.snapshot`
//! The root of every mount has a read-only `.snapshot` directory, as ONTAP's NFS exports
//! do: one entry per snapshot, each the snapshot's tree. It is reachable by name but, by
//! default, not listed by `readdir` of the root (ONTAP's `-v3-hide-snapshot` behaviour): a
//! listed `.snapshot` would show up as a database in a MariaDB data directory. Set
//! [`MountOptions::list_snapshot_dir`] to list it. A `.snapshot` entry in the active tree's
//! root (possible only through the control API) is shadowed.
//!
//! # Read-only volumes
//! Writes to a volume of type `dp` (a SnapMirror destination) or to `.snapshot` fail with
//! `EROFS`; any access to an offline or restricted volume fails with `EIO` (the root's
//! attributes excepted, so the mount can still be unmounted); a deleted volume gives
//! `ESTALE`.
//!
//! # Caching and SnapRestore
//! Attributes and directory entries of the active tree are not cached by the kernel
//! (TTL 0, [`MountOptions::ttl`]), so changes made through the REST or control API are seen
//! at once. File pages are cached only while a file is open: no open asks the kernel to keep
//! its cache (`FOPEN_KEEP_CACHE` is never set), so every open drops the file's cached pages.
//! `O_DIRECT` opens (MariaDB's default `innodb_flush_method`) get `FOPEN_DIRECT_IO` and bypass
//! the page cache; [`MountOptions::direct_io`] does the same for every open.
//!
//! A SnapRestore swaps the tree under files that may still be open: a process that keeps a
//! file open across a restore can read stale cached pages. The restore workflow therefore
//! stops the application and mounts afresh ([`MountHandle::unmount`] then [`mount`], or
//! [`MountManager::remount`]). [`MountHandle::invalidate_cache`] drops every cached page
//! and attribute of the inodes the kernel knows, for callers that restore in place.
//!
//! # Known gaps
//! - A file unlinked while open is gone at once (no deferred release): further reads and
//!   writes through the open descriptor fail with `ENOENT`.
//! - `fallocate` supports mode 0 only (others: `EOPNOTSUPP`, which glibc's and InnoDB's
//!   callers handle); no extended attributes; locks are the kernel's local ones.
//! - A file may not extend past the volume's size (`EFBIG`): the tree stores one slot per
//!   block, holes included.
//! - Nested junction paths are not mounted (the inner mount point would live in the outer
//!   volume).
//! - `getattr` counts a file's allocated blocks (O(blocks)): cheap for database files,
//!   slow for multi-GiB synthetic fills.
//! - Never do I/O on a mount while holding the simulator's lock (inside a `with_volume`,
//!   `transact` or `read` closure): the FUSE request waits for that same lock.
//!
//! # Unmounting
//! [`MountHandle`] unmounts on drop: `fusermount3 -u`, and if the mount is busy a lazy
//! `fusermount3 -u -z` (the mount point is detached at once; files still open keep being
//! served until closed). Mounts are made with `auto_unmount` by default, so `fusermount3`
//! also removes them if this process dies (it acts only once the file system is dead, hence
//! the explicit unmount first).

mod manager;
mod mount;
mod vfs;

pub use manager::MountManager;
pub use mount::{check_prerequisites, mount, mount_with, MountHandle, MountOptions};
pub use vfs::{decode_ino, encode_ino, Node, SNAPSHOT_DIR_NAME};
