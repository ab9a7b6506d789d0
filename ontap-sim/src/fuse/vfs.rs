//! The `fuser::Filesystem` over one volume of a [`Simulator`]: every request is one call
//! under the simulator's lock.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType as FuseType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

use crate::model::fs::{FileType, Fs, FsError, Inode, InodeKind, NewInode, BLOCK_SIZE, NAME_LEN_MAX, ROOT_INO};
use crate::model::space::SpaceLedger;
use crate::model::volume::{Volume, VolumeState, VolumeType};
use crate::sim::Simulator;

use super::MountOptions;

/// Name of the read-only snapshot directory at the root of every mount.
pub const SNAPSHOT_DIR_NAME: &str = ".snapshot";

const SLOT_SHIFT: u32 = 40;
const TREE_MASK: u64 = (1 << SLOT_SHIFT) - 1;
const SLOT_MAX: u64 = (1 << (64 - SLOT_SHIFT)) - 1;
const SLOT_SYNTHETIC: u64 = 1;
const SLOT_FIRST_SNAPSHOT: u64 = 2;

/// What a FUSE inode number names (see the module documentation for the encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// An inode of the active file system.
    Active(u64),
    /// The `.snapshot` directory.
    SnapshotDir,
    /// Inode `ino` of the snapshot taken at ledger epoch `epoch`.
    Snapshot { epoch: u64, ino: u64 },
}

/// The FUSE inode number of `node`, or `None` past the encoding's limits.
pub fn encode_ino(node: Node) -> Option<u64> {
    match node {
        Node::Active(ino) => (ino != 0 && ino <= TREE_MASK).then_some(ino),
        Node::SnapshotDir => Some(SLOT_SYNTHETIC << SLOT_SHIFT | 1),
        Node::Snapshot { epoch, ino } => {
            let slot = epoch.checked_add(SLOT_FIRST_SNAPSHOT)?;
            (slot <= SLOT_MAX && ino != 0 && ino <= TREE_MASK).then_some(slot << SLOT_SHIFT | ino)
        }
    }
}

/// The node a FUSE inode number names, or `None` if no encoding gives it.
pub fn decode_ino(fuse_ino: u64) -> Option<Node> {
    let slot = fuse_ino >> SLOT_SHIFT;
    let ino = fuse_ino & TREE_MASK;
    match slot {
        0 => (ino != 0).then_some(Node::Active(ino)),
        SLOT_SYNTHETIC => (ino == 1).then_some(Node::SnapshotDir),
        _ => (ino != 0).then_some(Node::Snapshot { epoch: slot - SLOT_FIRST_SNAPSHOT, ino }),
    }
}

type R<T> = Result<T, Errno>;

fn errno(e: FsError) -> Errno {
    match e {
        FsError::NotFound(_) => Errno::ENOENT,
        FsError::Exists(_) => Errno::EEXIST,
        FsError::NotDir(_) => Errno::ENOTDIR,
        FsError::IsDir(_) => Errno::EISDIR,
        FsError::NotEmpty(_) => Errno::ENOTEMPTY,
        FsError::InvalidName(_) => Errno::EINVAL,
        FsError::NoSpace => Errno::ENOSPC,
        FsError::ReadOnly => Errno::EROFS,
    }
}

fn enc(node: Node) -> R<u64> {
    encode_ino(node).ok_or(Errno::EOVERFLOW)
}

fn dec(ino: INodeNo) -> R<Node> {
    decode_ino(ino.0).ok_or(Errno::ENOENT)
}

fn name_str(name: &OsStr) -> R<&str> {
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    if name.len() > NAME_LEN_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(name)
}

/// `.snapshot` in the root of the active file system is the snapshot directory.
fn is_reserved(parent: Node, name: &str) -> bool {
    parent == Node::Active(ROOT_INO) && name == SNAPSHOT_DIR_NAME
}

fn fuse_type(t: FileType) -> FuseType {
    match t {
        FileType::File => FuseType::RegularFile,
        FileType::Dir => FuseType::Directory,
        FileType::Symlink => FuseType::Symlink,
    }
}

fn inode_attr(fuse_ino: u64, inode: &Inode) -> FileAttr {
    FileAttr {
        ino: INodeNo(fuse_ino),
        size: inode.size(),
        blocks: inode.n_blocks() * (BLOCK_SIZE as u64 / 512),
        atime: inode.mtime,
        mtime: inode.mtime,
        ctime: inode.ctime,
        crtime: inode.ctime,
        kind: fuse_type(inode.file_type()),
        perm: (inode.mode & 0o7777) as u16,
        nlink: inode.nlink,
        uid: inode.uid,
        gid: inode.gid,
        rdev: 0,
        blksize: BLOCK_SIZE as u32,
        flags: 0,
    }
}

fn online(v: &Volume) -> R<()> {
    if v.state == VolumeState::Online {
        Ok(())
    } else {
        Err(Errno::EIO)
    }
}

fn writable(v: &Volume) -> R<()> {
    online(v)?;
    if v.vtype == VolumeType::Dp {
        return Err(Errno::EROFS);
    }
    Ok(())
}

/// The tree `node` lives in and its inode number there.
fn tree(v: &Volume, node: Node) -> R<(&Fs, u64)> {
    match node {
        Node::Active(ino) => Ok((&v.fs, ino)),
        Node::Snapshot { epoch, ino } => {
            let snapshot = v.snapshots.iter().find(|s| s.epoch == epoch).ok_or(Errno::ESTALE)?;
            Ok((&snapshot.fs, ino))
        }
        Node::SnapshotDir => Err(Errno::EINVAL),
    }
}

/// The same tree as `node`, another inode.
fn sibling(node: Node, ino: u64) -> Node {
    match node {
        Node::Snapshot { epoch, .. } => Node::Snapshot { epoch, ino },
        _ => Node::Active(ino),
    }
}

fn snapshot_dir_attr(v: &Volume) -> FileAttr {
    let time: SystemTime = v.snapshots.back().map(|s| s.create_time).unwrap_or(v.create_time).into();
    FileAttr {
        ino: INodeNo(encode_ino(Node::SnapshotDir).expect("fixed number")),
        size: BLOCK_SIZE as u64,
        blocks: 0,
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind: FuseType::Directory,
        perm: 0o555,
        nlink: 2 + v.snapshots.len() as u32,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLOCK_SIZE as u32,
        flags: 0,
    }
}

fn node_attr(v: &Volume, node: Node) -> R<FileAttr> {
    match node {
        Node::SnapshotDir => Ok(snapshot_dir_attr(v)),
        _ => {
            let (fs, ino) = tree(v, node)?;
            let inode = fs.inode(ino).map_err(errno)?;
            let mut attr = inode_attr(enc(node)?, inode);
            if matches!(node, Node::Snapshot { .. }) {
                // Read-only view: no write bits, as on an ONTAP `.snapshot` export.
                attr.perm &= !0o222;
            }
            Ok(attr)
        }
    }
}

pub(crate) struct VolumeFs {
    sim: Simulator,
    uuid: String,
    opts: MountOptions,
    /// FUSE inode -> lookup count the kernel holds (for cache invalidation).
    known: Arc<Mutex<HashMap<u64, u64>>>,
}

impl VolumeFs {
    pub(crate) fn new(sim: Simulator, uuid: String, opts: MountOptions, known: Arc<Mutex<HashMap<u64, u64>>>) -> Self {
        VolumeFs { sim, uuid, opts, known }
    }

    fn read_vol<T>(&self, f: impl FnOnce(&Volume) -> R<T>) -> R<T> {
        match self.sim.with_volume(&self.uuid, |v| Ok(f(v))) {
            Ok(result) => result,
            Err(_) => Err(Errno::ESTALE),
        }
    }

    /// A mutation of the active file system: refused on read-only volumes.
    fn write_vol<T>(&self, f: impl FnOnce(&mut Fs, &mut SpaceLedger, u64, SystemTime) -> R<T>) -> R<T> {
        let now: SystemTime = self.sim.now().into();
        match self.sim.with_volume_mut(&self.uuid, |v| {
            Ok(writable(v).and_then(|()| {
                let size = v.space().size;
                f(&mut v.fs, &mut v.ledger, size, now)
            }))
        }) {
            Ok(result) => result,
            Err(_) => Err(Errno::ESTALE),
        }
    }

    fn ttl(&self, node: Node) -> Duration {
        match node {
            Node::Active(_) | Node::SnapshotDir => self.opts.ttl,
            // A snapshot's root is looked up by name and names can go; what lies below is
            // immutable.
            Node::Snapshot { ino, .. } if ino == ROOT_INO => self.opts.ttl,
            Node::Snapshot { .. } => self.opts.snapshot_ttl,
        }
    }

    fn entry(&self, reply: ReplyEntry, result: R<(Node, FileAttr)>) {
        match result {
            Ok((node, attr)) => {
                *self.known.lock().entry(attr.ino.0).or_insert(0) += 1;
                reply.entry(&self.ttl(node), &attr, Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn fopen_flags(&self, flags: i32) -> FopenFlags {
        if self.opts.direct_io || flags & libc::O_DIRECT != 0 {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
        }
    }

    fn new_inode(req: &Request, mode: u32, umask: u32, now: SystemTime) -> NewInode {
        NewInode { mode: mode & !umask & 0o7777, uid: req.uid(), gid: req.gid(), now }
    }

    fn active_parent(parent: INodeNo, name: &str) -> R<u64> {
        match dec(parent)? {
            Node::Active(p) if is_reserved(Node::Active(p), name) => Err(Errno::EEXIST),
            Node::Active(p) => Ok(p),
            _ => Err(Errno::EROFS),
        }
    }

    /// Create `name` in `parent` with `make`, answering with the new entry.
    fn make_entry(&self, parent: INodeNo, name: &OsStr, reply: ReplyEntry, make: impl FnOnce(&mut Fs, u64, &str, SystemTime) -> Result<u64, FsError>) {
        let result = name_str(name).and_then(|name| {
            let p = Self::active_parent(parent, name)?;
            self.write_vol(|fs, _, _, now| {
                let ino = make(fs, p, name, now).map_err(errno)?;
                let node = Node::Active(ino);
                Ok((node, inode_attr(enc(node)?, fs.inode(ino).map_err(errno)?)))
            })
        });
        self.entry(reply, result);
    }
}

fn check_end(offset: u64, len: u64, volume_size: u64) -> R<()> {
    match offset.checked_add(len) {
        Some(end) if end <= volume_size => Ok(()),
        _ => Err(Errno::EFBIG),
    }
}

fn reply_empty(reply: ReplyEmpty, result: R<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for VolumeFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = dec(parent).and_then(|parent| {
            let name = name_str(name)?;
            self.read_vol(|v| {
                online(v)?;
                let node = match parent {
                    p if is_reserved(p, name) => Node::SnapshotDir,
                    Node::SnapshotDir => match name {
                        "." => Node::SnapshotDir,
                        ".." => Node::Active(ROOT_INO),
                        _ => Node::Snapshot { epoch: v.snapshot_by_name(name).ok_or(Errno::ENOENT)?.epoch, ino: ROOT_INO },
                    },
                    Node::Snapshot { ino, .. } if ino == ROOT_INO && name == ".." => Node::SnapshotDir,
                    p => {
                        let (fs, ino) = tree(v, p)?;
                        sibling(p, fs.lookup(ino, name).map_err(errno)?)
                    }
                };
                Ok((node, node_attr(v, node)?))
            })
        });
        self.entry(reply, result);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut known = self.known.lock();
        if let Some(count) = known.get_mut(&ino.0) {
            *count = count.saturating_sub(nlookup);
            if *count == 0 {
                known.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = dec(ino).and_then(|node| {
            self.read_vol(|v| {
                // The root stays visible on an offline volume so that it can be unmounted.
                if node != Node::Active(ROOT_INO) {
                    online(v)?;
                }
                Ok((node, node_attr(v, node)?))
            })
        });
        match result {
            Ok((node, attr)) => reply.attr(&self.ttl(node), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = dec(ino).and_then(|node| {
            let Node::Active(ino) = node else { return Err(Errno::EROFS) };
            self.write_vol(|fs, ledger, volume_size, now| {
                if let Some(size) = size {
                    check_end(size, 0, volume_size)?;
                    fs.truncate(ino, size, ledger, now).map_err(errno)?;
                }
                let mtime = mtime.map(|t| match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => now,
                });
                if mode.is_some() || uid.is_some() || gid.is_some() || mtime.is_some() {
                    fs.set_attrs(ino, mode, uid, gid, mtime, now).map_err(errno)?;
                }
                // atime is not modelled (it reads as mtime): an atime-only change is a no-op.
                Ok(inode_attr(enc(node)?, fs.inode(ino).map_err(errno)?))
            })
        });
        match result {
            Ok(attr) => reply.attr(&self.opts.ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let result = dec(ino).and_then(|node| {
            self.read_vol(|v| {
                online(v)?;
                let (fs, ino) = tree(v, node)?;
                match &fs.inode(ino).map_err(errno)?.kind {
                    InodeKind::Symlink { target } => Ok(target.clone().into_bytes()),
                    _ => Err(Errno::EINVAL),
                }
            })
        });
        match result {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _rdev: u32, reply: ReplyEntry) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        self.make_entry(parent, name, reply, |fs, p, name, now| fs.create_file(p, name, Self::new_inode(req, mode, umask, now)));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        self.make_entry(parent, name, reply, |fs, p, name, now| fs.mkdir(p, name, Self::new_inode(req, mode, umask, now)));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let Some(target) = target.to_str() else { return reply.error(Errno::EINVAL) };
        self.make_entry(parent, link_name, reply, |fs, p, name, now| fs.symlink(p, name, target, Self::new_inode(req, 0o777, 0, now)));
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let Ok(Node::Active(ino)) = dec(ino) else { return reply.error(Errno::EROFS) };
        self.make_entry(newparent, newname, reply, |fs, p, name, now| fs.link(ino, p, name, now).map(|()| ino));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = name_str(name).and_then(|name| match dec(parent)? {
            p if is_reserved(p, name) => Err(Errno::EROFS),
            Node::Active(p) => self.write_vol(|fs, ledger, _, now| fs.unlink(p, name, ledger, now).map_err(errno)),
            _ => Err(Errno::EROFS),
        });
        reply_empty(reply, result);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = name_str(name).and_then(|name| match dec(parent)? {
            p if is_reserved(p, name) => Err(Errno::EROFS),
            Node::Active(p) => self.write_vol(|fs, _, _, now| fs.rmdir(p, name, now).map_err(errno)),
            _ => Err(Errno::EROFS),
        });
        reply_empty(reply, result);
    }

    fn rename(&self, _req: &Request, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags, reply: ReplyEmpty) {
        let result = (|| {
            let (name, newname) = (name_str(name)?, name_str(newname)?);
            if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
                return Err(Errno::EINVAL);
            }
            let (from, to) = (dec(parent)?, dec(newparent)?);
            if is_reserved(from, name) || is_reserved(to, newname) {
                return Err(Errno::EROFS);
            }
            let (Node::Active(from), Node::Active(to)) = (from, to) else { return Err(Errno::EROFS) };
            self.write_vol(|fs, ledger, _, now| {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) && fs.lookup(to, newname).is_ok() {
                    return Err(Errno::EEXIST);
                }
                fs.rename(from, name, to, newname, ledger, now).map_err(errno)
            })
        })();
        reply_empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let wants_write = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        let result = dec(ino).and_then(|node| {
            self.read_vol(|v| {
                online(v)?;
                let (fs, ino) = tree(v, node)?;
                match fs.inode(ino).map_err(errno)?.file_type() {
                    FileType::File => {}
                    FileType::Dir => return Err(Errno::EISDIR),
                    FileType::Symlink => return Err(Errno::ELOOP),
                }
                if wants_write {
                    if !matches!(node, Node::Active(_)) {
                        return Err(Errno::EROFS);
                    }
                    writable(v)?;
                }
                Ok(())
            })
        });
        match result {
            Ok(()) => reply.opened(FileHandle(0), self.fopen_flags(flags.0)),
            Err(e) => reply.error(e),
        }
    }

    fn read(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, size: u32, _flags: OpenFlags, _lock_owner: Option<LockOwner>, reply: ReplyData) {
        let result = dec(ino).and_then(|node| {
            self.read_vol(|v| {
                online(v)?;
                let (fs, ino) = tree(v, node)?;
                fs.read(ino, offset, size as usize).map_err(errno)
            })
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = dec(ino).and_then(|node| {
            let Node::Active(ino) = node else { return Err(Errno::EROFS) };
            self.write_vol(|fs, ledger, volume_size, now| {
                check_end(offset, data.len() as u64, volume_size)?;
                fs.write(ino, offset, data, ledger, now).map_err(errno)
            })
        });
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    // Every write is in the tree when it is answered: nothing to flush or sync.
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = dec(ino).and_then(|node| {
            self.read_vol(|v| {
                online(v)?;
                match node_attr(v, node)?.kind {
                    FuseType::Directory => Ok(()),
                    _ => Err(Errno::ENOTDIR),
                }
            })
        });
        match result {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let result = dec(ino).and_then(|node| {
            self.read_vol(|v| {
                online(v)?;
                let mut entries: Vec<(u64, FuseType, String)> = Vec::new();
                match node {
                    Node::SnapshotDir => {
                        entries.push((enc(node)?, FuseType::Directory, ".".into()));
                        entries.push((ROOT_INO, FuseType::Directory, "..".into()));
                        for s in v.snapshots.iter() {
                            // Snapshots past the encoding's limits are left out of listings.
                            if let Some(ino) = encode_ino(Node::Snapshot { epoch: s.epoch, ino: ROOT_INO }) {
                                entries.push((ino, FuseType::Directory, s.name.clone()));
                            }
                        }
                    }
                    _ => {
                        let (fs, dir) = tree(v, node)?;
                        let listing = fs.readdir(dir).map_err(errno)?;
                        let up = match node {
                            Node::Snapshot { ino, .. } if ino == ROOT_INO => Node::SnapshotDir,
                            _ => sibling(node, fs.lookup(dir, "..").map_err(errno)?),
                        };
                        entries.push((enc(node)?, FuseType::Directory, ".".into()));
                        entries.push((enc(up)?, FuseType::Directory, "..".into()));
                        let root = node == Node::Active(ROOT_INO);
                        if root && self.opts.list_snapshot_dir {
                            entries.push((enc(Node::SnapshotDir)?, FuseType::Directory, SNAPSHOT_DIR_NAME.into()));
                        }
                        for (name, child, kind) in listing {
                            if root && name == SNAPSHOT_DIR_NAME {
                                continue;
                            }
                            if let Some(ino) = encode_ino(sibling(node, child)) {
                                entries.push((ino, fuse_type(kind), name));
                            }
                        }
                    }
                }
                Ok(entries)
            })
        });
        match result {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let result = self.read_vol(|v| Ok((v.space(), v.fs.n_inodes() as u64)));
        match result {
            Ok((space, n_inodes)) => {
                let bs = BLOCK_SIZE as u64;
                // As `df` on an ONTAP NFS export: the size less the snapshot reserve; free is
                // what the active file system may still allocate.
                let blocks = space.size.saturating_sub(space.snapshot_reserve_size) / bs;
                let free = space.available / bs;
                // ONTAP's default maxfiles: one inode per 32 KiB of volume.
                let files = (space.size / 32768).max(n_inodes);
                reply.statfs(blocks, free, free, files, files - n_inodes, BLOCK_SIZE as u32, NAME_LEN_MAX as u32, BLOCK_SIZE as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let result = name_str(name).and_then(|name| {
            let p = Self::active_parent(parent, name)?;
            self.write_vol(|fs, ledger, _, now| {
                let ino = match fs.create_file(p, name, Self::new_inode(req, mode, umask, now)) {
                    Ok(ino) => ino,
                    // Lost a race with another creator: open what is there, as open(2) would.
                    Err(FsError::Exists(_)) if flags & libc::O_EXCL == 0 => {
                        let ino = fs.lookup(p, name).map_err(errno)?;
                        if fs.inode(ino).map_err(errno)?.file_type() != FileType::File {
                            return Err(Errno::EISDIR);
                        }
                        if flags & libc::O_TRUNC != 0 {
                            fs.truncate(ino, 0, ledger, now).map_err(errno)?;
                        }
                        ino
                    }
                    Err(e) => return Err(errno(e)),
                };
                Ok(inode_attr(enc(Node::Active(ino))?, fs.inode(ino).map_err(errno)?))
            })
        });
        match result {
            Ok(attr) => {
                *self.known.lock().entry(attr.ino.0).or_insert(0) += 1;
                reply.created(&self.opts.ttl, &attr, Generation(0), FileHandle(0), self.fopen_flags(flags));
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        let result = (|| {
            if mode != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let Node::Active(ino) = dec(ino)? else { return Err(Errno::EROFS) };
            self.write_vol(|fs, ledger, volume_size, now| {
                check_end(offset, length, volume_size)?;
                fs.allocate(ino, offset, length, ledger, now).map_err(errno)
            })
        })();
        reply_empty(reply, result);
    }

    // Not supported. ENOSYS makes the kernel stop asking (and answer EOPNOTSUPP itself, or
    // fall back to its generic code), without a log line per request.
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _value: &[u8], _flags: i32, _position: u32, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    /// Permissions are the kernel's (`default_permissions`).
    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn lseek(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _offset: i64, _whence: i32, reply: fuser::ReplyLseek) {
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: fuser::IoctlFlags, _cmd: u32, _in_data: &[u8], _out_size: u32, reply: fuser::ReplyIoctl) {
        reply.error(Errno::ENOTTY);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }
}
