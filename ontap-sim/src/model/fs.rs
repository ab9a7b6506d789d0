//! A volume's file system: a persistent, structurally shared tree of inodes and 4 KiB blocks.
//!
//! Cloning an [`Fs`] is O(1) in time and memory (it copies a few root pointers), which is
//! what makes a snapshot constant-cost like WAFL's. A write after a clone copies only the
//! path to the blocks it touches. Every block freed from or added to the tree is reported to
//! the volume's [`SpaceLedger`], which turns block births and deaths into space accounting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use imbl::{OrdMap, Vector};

use super::space::SpaceLedger;

pub const BLOCK_SIZE: usize = 4096;
pub const ROOT_INO: u64 = 1;
/// Longest file name a directory accepts, as on NFS exports of ONTAP volumes.
pub const NAME_LEN_MAX: usize = 255;

pub type BlockData = Arc<[u8; BLOCK_SIZE]>;

/// Identity of every block ever written, across all volumes: lets tests check the ledger
/// against a brute-force count of distinct blocks.
static NEXT_BLOCK_ID: AtomicU64 = AtomicU64::new(1);

/// One allocated 4 KiB block. `data` may be shared between blocks (synthetic fills repeat a
/// few buffers) but `id` is unique per allocation, so space counts logical blocks.
#[derive(Clone, Debug)]
pub struct Block {
    pub id: u64,
    /// The ledger epoch in which the block was written (see [`SpaceLedger`]).
    pub birth: u64,
    pub data: BlockData,
}

impl Block {
    pub(super) fn new(birth: u64, data: BlockData) -> Self {
        Block { id: NEXT_BLOCK_ID.fetch_add(1, Ordering::Relaxed), birth, data }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Copy)]
pub enum FileType {
    File,
    Dir,
    Symlink,
}

#[derive(Clone, Debug)]
pub enum InodeKind {
    /// `None` entries are holes: they read as zeros and hold no space.
    File { size: u64, blocks: Vector<Option<Block>> },
    Dir { parent: u64, entries: OrdMap<String, u64> },
    Symlink { target: String },
}

#[derive(Clone, Debug)]
pub struct Inode {
    pub ino: u64,
    pub kind: InodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

impl Inode {
    pub fn file_type(&self) -> FileType {
        match self.kind {
            InodeKind::File { .. } => FileType::File,
            InodeKind::Dir { .. } => FileType::Dir,
            InodeKind::Symlink { .. } => FileType::Symlink,
        }
    }

    pub fn size(&self) -> u64 {
        match &self.kind {
            InodeKind::File { size, .. } => *size,
            InodeKind::Dir { entries, .. } => entries.len() as u64,
            InodeKind::Symlink { target } => target.len() as u64,
        }
    }

    /// Allocated blocks (holes excluded).
    pub fn n_blocks(&self) -> u64 {
        match &self.kind {
            InodeKind::File { blocks, .. } => blocks.iter().filter(|b| b.is_some()).count() as u64,
            _ => 0,
        }
    }
}

/// File system errors, named after the errno a POSIX file system would give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory: {0}")]
    NotFound(String),
    #[error("file exists: {0}")]
    Exists(String),
    #[error("not a directory: {0}")]
    NotDir(String),
    #[error("is a directory: {0}")]
    IsDir(String),
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("no space left on the volume")]
    NoSpace,
    #[error("read-only file system")]
    ReadOnly,
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound(_) => 2,
            FsError::Exists(_) => 17,
            FsError::NotDir(_) => 20,
            FsError::IsDir(_) => 21,
            FsError::NotEmpty(_) => 39,
            FsError::InvalidName(_) => 22,
            FsError::NoSpace => 28,
            FsError::ReadOnly => 30,
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// Attributes given to new inodes.
#[derive(Clone, Copy, Debug)]
pub struct NewInode {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub now: SystemTime,
}

impl NewInode {
    pub fn file(now: SystemTime) -> Self {
        NewInode { mode: 0o644, uid: 0, gid: 0, now }
    }
    pub fn dir(now: SystemTime) -> Self {
        NewInode { mode: 0o755, uid: 0, gid: 0, now }
    }
}

/// The tree. Inode numbers are never reused within a volume's history (including across
/// SnapRestore), so an (inode, index, block id) names one block for good.
#[derive(Clone, Debug)]
pub struct Fs {
    pub(super) inodes: OrdMap<u64, Inode>,
    pub(super) next_ino: u64,
}

fn zero_block() -> BlockData {
    static ZERO: std::sync::OnceLock<BlockData> = std::sync::OnceLock::new();
    ZERO.get_or_init(|| Arc::new([0u8; BLOCK_SIZE])).clone()
}

fn blocks_for(size: u64) -> usize {
    size.div_ceil(BLOCK_SIZE as u64) as usize
}

impl Fs {
    pub fn new(now: SystemTime) -> Self {
        let root = Inode {
            ino: ROOT_INO,
            kind: InodeKind::Dir { parent: ROOT_INO, entries: OrdMap::new() },
            mode: 0o755,
            uid: 0,
            gid: 0,
            nlink: 2,
            mtime: now,
            ctime: now,
        };
        let mut inodes = OrdMap::new();
        inodes.insert(ROOT_INO, root);
        Fs { inodes, next_ino: ROOT_INO + 1 }
    }

    pub fn next_ino(&self) -> u64 {
        self.next_ino
    }

    /// After a SnapRestore the restored tree must not hand out inode numbers that newer
    /// (now deleted) trees used: clients may still cache them.
    pub fn raise_next_ino(&mut self, at_least: u64) {
        self.next_ino = self.next_ino.max(at_least);
    }

    pub fn inode(&self, ino: u64) -> FsResult<&Inode> {
        self.inodes.get(&ino).ok_or_else(|| FsError::NotFound(format!("inode {ino}")))
    }

    fn inode_mut(&mut self, ino: u64) -> FsResult<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(|| FsError::NotFound(format!("inode {ino}")))
    }

    pub fn inodes(&self) -> impl Iterator<Item = &Inode> {
        self.inodes.values()
    }

    pub fn n_inodes(&self) -> usize {
        self.inodes.len()
    }

    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<u64> {
        match &self.inode(parent)?.kind {
            InodeKind::Dir { entries, parent: up } => match name {
                "." => Ok(parent),
                ".." => Ok(*up),
                _ => entries.get(name).copied().ok_or_else(|| FsError::NotFound(name.to_string())),
            },
            _ => Err(FsError::NotDir(format!("inode {parent}"))),
        }
    }

    /// Resolve a `/`-separated path from the root (empty components ignored; `..` refused
    /// so that control-API paths cannot climb out of anything).
    pub fn resolve(&self, path: &str) -> FsResult<u64> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if part == ".." {
                return Err(FsError::InvalidName(path.to_string()));
            }
            ino = self.lookup(ino, part)?;
        }
        Ok(ino)
    }

    pub fn readdir(&self, ino: u64) -> FsResult<Vec<(String, u64, FileType)>> {
        match &self.inode(ino)?.kind {
            InodeKind::Dir { entries, .. } => entries
                .iter()
                .map(|(name, child)| Ok((name.clone(), *child, self.inode(*child)?.file_type())))
                .collect(),
            _ => Err(FsError::NotDir(format!("inode {ino}"))),
        }
    }

    fn check_name(name: &str) -> FsResult<()> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') || name.len() > NAME_LEN_MAX {
            return Err(FsError::InvalidName(name.to_string()));
        }
        Ok(())
    }

    fn dir_entries_mut(&mut self, dir: u64) -> FsResult<&mut OrdMap<String, u64>> {
        match &mut self.inode_mut(dir)?.kind {
            InodeKind::Dir { entries, .. } => Ok(entries),
            _ => Err(FsError::NotDir(format!("inode {dir}"))),
        }
    }

    fn create_inode(&mut self, parent: u64, name: &str, kind: InodeKind, attrs: NewInode) -> FsResult<u64> {
        Self::check_name(name)?;
        if self.dir_entries_mut(parent)?.contains_key(name) {
            return Err(FsError::Exists(name.to_string()));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let is_dir = matches!(kind, InodeKind::Dir { .. });
        self.inodes.insert(
            ino,
            Inode { ino, kind, mode: attrs.mode, uid: attrs.uid, gid: attrs.gid, nlink: if is_dir { 2 } else { 1 }, mtime: attrs.now, ctime: attrs.now },
        );
        self.dir_entries_mut(parent)?.insert(name.to_string(), ino);
        let dir = self.inode_mut(parent)?;
        dir.mtime = attrs.now;
        dir.ctime = attrs.now;
        if is_dir {
            dir.nlink += 1;
        }
        Ok(ino)
    }

    pub fn create_file(&mut self, parent: u64, name: &str, attrs: NewInode) -> FsResult<u64> {
        self.create_inode(parent, name, InodeKind::File { size: 0, blocks: Vector::new() }, attrs)
    }

    pub fn mkdir(&mut self, parent: u64, name: &str, attrs: NewInode) -> FsResult<u64> {
        self.create_inode(parent, name, InodeKind::Dir { parent, entries: OrdMap::new() }, attrs)
    }

    pub fn symlink(&mut self, parent: u64, name: &str, target: &str, attrs: NewInode) -> FsResult<u64> {
        self.create_inode(parent, name, InodeKind::Symlink { target: target.to_string() }, attrs)
    }

    /// Create every missing directory of `path` and the file itself if missing; returns it.
    pub fn create_path(&mut self, path: &str, now: SystemTime) -> FsResult<u64> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((file, dirs)) = parts.split_last() else {
            return Err(FsError::InvalidName(path.to_string()));
        };
        let mut dir = ROOT_INO;
        for part in dirs {
            dir = match self.lookup(dir, part) {
                Ok(ino) => ino,
                Err(FsError::NotFound(_)) => self.mkdir(dir, part, NewInode::dir(now))?,
                Err(e) => return Err(e),
            };
        }
        match self.lookup(dir, file) {
            Ok(ino) => Ok(ino),
            Err(FsError::NotFound(_)) => self.create_file(dir, file, NewInode::file(now)),
            Err(e) => Err(e),
        }
    }

    pub fn read(&self, ino: u64, offset: u64, len: usize) -> FsResult<Vec<u8>> {
        let InodeKind::File { size, blocks } = &self.inode(ino)?.kind else {
            return Err(FsError::IsDir(format!("inode {ino}")));
        };
        if offset >= *size {
            return Ok(Vec::new());
        }
        let end = (*size).min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let index = (pos / BLOCK_SIZE as u64) as usize;
            let within = (pos % BLOCK_SIZE as u64) as usize;
            let n = (BLOCK_SIZE - within).min((end - pos) as usize);
            match blocks.get(index).and_then(|b| b.as_ref()) {
                Some(block) => out.extend_from_slice(&block.data[within..within + n]),
                None => out.resize(out.len() + n, 0),
            }
            pos += n as u64;
        }
        Ok(out)
    }

    /// Write `data` at `offset`, copying only the blocks touched. A block written in the
    /// current epoch belongs to no snapshot yet, so it is changed in place.
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8], ledger: &mut SpaceLedger, now: SystemTime) -> FsResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        let first = (offset / BLOCK_SIZE as u64) as usize;
        let last = ((end - 1) / BLOCK_SIZE as u64) as usize;
        let inode = self.inode_mut(ino)?;
        let InodeKind::File { size, blocks } = &mut inode.kind else {
            return Err(FsError::IsDir(format!("inode {ino}")));
        };
        // Space check first, so a refused write changes nothing.
        let epoch = ledger.epoch();
        let n_new = (first..=last)
            .filter(|&i| !matches!(blocks.get(i), Some(Some(b)) if b.birth == epoch))
            .count() as u64;
        let n_freed_now = (first..=last)
            .filter(|&i| matches!(blocks.get(i), Some(Some(b)) if b.birth != epoch && !ledger.held_by_snapshot(b.birth)))
            .count() as u64;
        if n_new > n_freed_now && ledger.available_blocks() < n_new - n_freed_now {
            return Err(FsError::NoSpace);
        }
        while blocks.len() <= last {
            blocks.push_back(None);
        }
        let mut src = 0usize;
        for index in first..=last {
            let within = if index == first { (offset % BLOCK_SIZE as u64) as usize } else { 0 };
            let n = (BLOCK_SIZE - within).min(data.len() - src);
            let chunk = &data[src..src + n];
            src += n;
            let slot = blocks.get_mut(index).expect("extended above");
            match slot {
                Some(block) if block.birth == epoch => {
                    Arc::make_mut(&mut block.data)[within..within + n].copy_from_slice(chunk);
                }
                _ => {
                    let mut buf = match slot {
                        Some(old) if n < BLOCK_SIZE => *old.data,
                        _ => [0u8; BLOCK_SIZE],
                    };
                    buf[within..within + n].copy_from_slice(chunk);
                    if let Some(old) = slot.take() {
                        ledger.free(old.birth);
                    }
                    ledger.alloc();
                    *slot = Some(Block::new(epoch, Arc::new(buf)));
                }
            }
        }
        *size = (*size).max(end);
        inode.mtime = now;
        inode.ctime = now;
        Ok(())
    }

    /// Write whole blocks that share `data` buffers (synthetic fills): one tree entry per
    /// block, memory bounded by the number of distinct buffers.
    pub fn write_shared_blocks(&mut self, ino: u64, first_index: usize, data: impl Iterator<Item = BlockData>, ledger: &mut SpaceLedger, now: SystemTime) -> FsResult<()> {
        let inode = self.inode_mut(ino)?;
        let InodeKind::File { size, blocks } = &mut inode.kind else {
            return Err(FsError::IsDir(format!("inode {ino}")));
        };
        let epoch = ledger.epoch();
        let mut index = first_index;
        for buf in data {
            while blocks.len() <= index {
                blocks.push_back(None);
            }
            let slot = blocks.get_mut(index).expect("extended above");
            let freed = slot.as_ref().is_some_and(|b| !ledger.held_by_snapshot(b.birth) || b.birth == epoch);
            if !freed && ledger.available_blocks() == 0 {
                return Err(FsError::NoSpace);
            }
            if let Some(old) = slot.take() {
                ledger.free(old.birth);
            }
            ledger.alloc();
            *slot = Some(Block::new(epoch, buf));
            index += 1;
        }
        *size = (*size).max((index * BLOCK_SIZE) as u64);
        inode.mtime = now;
        inode.ctime = now;
        Ok(())
    }

    /// Allocate zeroed blocks for the holes in `[offset, offset+len)` (fallocate mode 0).
    pub fn allocate(&mut self, ino: u64, offset: u64, len: u64, ledger: &mut SpaceLedger, now: SystemTime) -> FsResult<()> {
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let first = (offset / BLOCK_SIZE as u64) as usize;
        let last = ((end - 1) / BLOCK_SIZE as u64) as usize;
        let inode = self.inode_mut(ino)?;
        let InodeKind::File { size, blocks } = &mut inode.kind else {
            return Err(FsError::IsDir(format!("inode {ino}")));
        };
        let n_holes = (first..=last).filter(|&i| !matches!(blocks.get(i), Some(Some(_)))).count() as u64;
        if ledger.available_blocks() < n_holes {
            return Err(FsError::NoSpace);
        }
        while blocks.len() <= last {
            blocks.push_back(None);
        }
        let epoch = ledger.epoch();
        for index in first..=last {
            let slot = blocks.get_mut(index).expect("extended above");
            if slot.is_none() {
                ledger.alloc();
                *slot = Some(Block::new(epoch, zero_block()));
            }
        }
        *size = (*size).max(end);
        inode.ctime = now;
        Ok(())
    }

    pub fn truncate(&mut self, ino: u64, new_size: u64, ledger: &mut SpaceLedger, now: SystemTime) -> FsResult<()> {
        let inode = self.inode_mut(ino)?;
        let InodeKind::File { size, blocks } = &mut inode.kind else {
            return Err(FsError::IsDir(format!("inode {ino}")));
        };
        let keep = blocks_for(new_size);
        if blocks.len() > keep {
            for block in blocks.iter().skip(keep).flatten() {
                ledger.free(block.birth);
            }
            blocks.truncate(keep);
        }
        // Bytes past the new end inside the last kept block must read as zeros if the file
        // grows again: zero them (copy-on-write like any other write).
        let tail = (new_size % BLOCK_SIZE as u64) as usize;
        if tail != 0 && new_size < *size {
            if let Some(slot) = blocks.get_mut(keep - 1) {
                if let Some(block) = slot {
                    let epoch = ledger.epoch();
                    if block.birth == epoch {
                        Arc::make_mut(&mut block.data)[tail..].fill(0);
                    } else {
                        let mut buf = *block.data;
                        buf[tail..].fill(0);
                        ledger.free(block.birth);
                        ledger.alloc();
                        *slot = Some(Block::new(epoch, Arc::new(buf)));
                    }
                }
            }
        }
        *size = new_size;
        inode.mtime = now;
        inode.ctime = now;
        Ok(())
    }

    fn release_inode(&mut self, ino: u64, ledger: &mut SpaceLedger) {
        if let Some(inode) = self.inodes.remove(&ino) {
            if let InodeKind::File { blocks, .. } = &inode.kind {
                for block in blocks.iter().flatten() {
                    ledger.free(block.birth);
                }
            }
        }
    }

    /// Remove a directory entry; the inode goes with its last link.
    pub fn unlink(&mut self, parent: u64, name: &str, ledger: &mut SpaceLedger, now: SystemTime) -> FsResult<()> {
        let ino = self.lookup(parent, name)?;
        if self.inode(ino)?.file_type() == FileType::Dir {
            return Err(FsError::IsDir(name.to_string()));
        }
        self.dir_entries_mut(parent)?.remove(name);
        let dir = self.inode_mut(parent)?;
        dir.mtime = now;
        dir.ctime = now;
        let inode = self.inode_mut(ino)?;
        inode.nlink = inode.nlink.saturating_sub(1);
        inode.ctime = now;
        if inode.nlink == 0 {
            self.release_inode(ino, ledger);
        }
        Ok(())
    }

    pub fn rmdir(&mut self, parent: u64, name: &str, now: SystemTime) -> FsResult<()> {
        let ino = self.lookup(parent, name)?;
        match &self.inode(ino)?.kind {
            InodeKind::Dir { entries, .. } if !entries.is_empty() => return Err(FsError::NotEmpty(name.to_string())),
            InodeKind::Dir { .. } => {}
            _ => return Err(FsError::NotDir(name.to_string())),
        }
        self.dir_entries_mut(parent)?.remove(name);
        self.inodes.remove(&ino);
        let dir = self.inode_mut(parent)?;
        dir.nlink = dir.nlink.saturating_sub(1);
        dir.mtime = now;
        dir.ctime = now;
        Ok(())
    }

    /// POSIX rename: an existing target file is replaced; an existing target directory must
    /// be empty; a directory cannot move below itself.
    pub fn rename(&mut self, parent: u64, name: &str, new_parent: u64, new_name: &str, ledger: &mut SpaceLedger, now: SystemTime) -> FsResult<()> {
        Self::check_name(new_name)?;
        let ino = self.lookup(parent, name)?;
        let is_dir = self.inode(ino)?.file_type() == FileType::Dir;
        if is_dir {
            let mut up = new_parent;
            loop {
                if up == ino {
                    return Err(FsError::InvalidName(new_name.to_string()));
                }
                if up == ROOT_INO {
                    break;
                }
                up = self.lookup(up, "..")?;
            }
        }
        if let Ok(existing) = self.lookup(new_parent, new_name) {
            if existing == ino {
                return Ok(());
            }
            match (is_dir, self.inode(existing)?.file_type() == FileType::Dir) {
                (true, true) => self.rmdir(new_parent, new_name, now)?,
                (false, false) => self.unlink(new_parent, new_name, ledger, now)?,
                (true, false) => return Err(FsError::NotDir(new_name.to_string())),
                (false, true) => return Err(FsError::IsDir(new_name.to_string())),
            }
        }
        self.dir_entries_mut(parent)?.remove(name);
        self.dir_entries_mut(new_parent)?.insert(new_name.to_string(), ino);
        if is_dir && parent != new_parent {
            if let InodeKind::Dir { parent: up, .. } = &mut self.inode_mut(ino)?.kind {
                *up = new_parent;
            }
            self.inode_mut(parent)?.nlink -= 1;
            self.inode_mut(new_parent)?.nlink += 1;
        }
        for dir in [parent, new_parent] {
            let d = self.inode_mut(dir)?;
            d.mtime = now;
            d.ctime = now;
        }
        self.inode_mut(ino)?.ctime = now;
        Ok(())
    }

    pub fn link(&mut self, ino: u64, new_parent: u64, new_name: &str, now: SystemTime) -> FsResult<()> {
        Self::check_name(new_name)?;
        if self.inode(ino)?.file_type() == FileType::Dir {
            return Err(FsError::IsDir(format!("inode {ino}")));
        }
        if self.dir_entries_mut(new_parent)?.contains_key(new_name) {
            return Err(FsError::Exists(new_name.to_string()));
        }
        self.dir_entries_mut(new_parent)?.insert(new_name.to_string(), ino);
        let inode = self.inode_mut(ino)?;
        inode.nlink += 1;
        inode.ctime = now;
        Ok(())
    }

    pub fn set_attrs(&mut self, ino: u64, mode: Option<u32>, uid: Option<u32>, gid: Option<u32>, mtime: Option<SystemTime>, now: SystemTime) -> FsResult<()> {
        let inode = self.inode_mut(ino)?;
        if let Some(mode) = mode {
            inode.mode = mode & 0o7777;
        }
        if let Some(uid) = uid {
            inode.uid = uid;
        }
        if let Some(gid) = gid {
            inode.gid = gid;
        }
        if let Some(mtime) = mtime {
            inode.mtime = mtime;
        }
        inode.ctime = now;
        Ok(())
    }

    /// Every allocated block in the tree, for brute-force checks and replication.
    pub fn blocks(&self) -> impl Iterator<Item = (u64, usize, &Block)> {
        self.inodes.values().flat_map(|inode| {
            let blocks = match &inode.kind {
                InodeKind::File { blocks, .. } => Some(blocks),
                _ => None,
            };
            blocks.into_iter().flat_map(move |bs| {
                bs.iter().enumerate().filter_map(move |(i, b)| b.as_ref().map(|b| (inode.ino, i, b)))
            })
        })
    }

    /// Number of allocated blocks by birth epoch.
    pub fn count_by_birth(&self) -> std::collections::BTreeMap<u64, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for (_, _, block) in self.blocks() {
            *counts.entry(block.birth).or_insert(0) += 1;
        }
        counts
    }
}
