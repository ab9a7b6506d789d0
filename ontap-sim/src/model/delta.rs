//! What changed between two trees of one volume's history, as SnapMirror ships it.
//!
//! [`diff`] compares a base snapshot's tree with a newer one. Inode numbers are never reused
//! within a volume's history and a block, once a snapshot holds it, is never changed in place
//! (a write allocates a new [`Block`] with a new id), so an unchanged file keeps the very same
//! block vector (`ptr_eq`, O(1)) and a changed file differs exactly in the slots whose block
//! id differs. Only those blocks cross. [`apply`] replays a delta onto the destination's copy
//! of the base, allocating and freeing through the destination's own ledger.
//!
//! The byte form ([`encode`] / [`decode`]) is the simulator's own: a block whose buffer
//! already crossed in the same stream is sent as a reference (SnapMirror preserves storage
//! efficiency on the wire too), so `bytes_transferred` is what really crossed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imbl::{OrdMap, Vector};

use super::fs::{Block, BlockData, Fs, Inode, InodeKind, BLOCK_SIZE};
use super::space::SpaceLedger;

/// The new content of one changed (or new) inode.
#[derive(Clone, Debug)]
pub struct InodeDelta {
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: KindDelta,
}

#[derive(Clone, Debug)]
pub enum KindDelta {
    /// `slots` is the new length of the block list; `blocks` the slots that differ from the
    /// base (`None`: now a hole). Slots past `slots` are gone.
    File { size: u64, slots: u64, blocks: Vec<(u64, Option<BlockData>)> },
    Dir { parent: u64, entries: Vec<(String, u64)> },
    Symlink { target: String },
}

#[derive(Clone, Debug, Default)]
pub struct FsDelta {
    pub next_ino: u64,
    pub removed: Vec<u64>,
    pub changed: Vec<InodeDelta>,
}

impl FsDelta {
    /// Data blocks carried (before wire deduplication).
    pub fn data_blocks(&self) -> usize {
        self.changed
            .iter()
            .map(|c| match &c.kind {
                KindDelta::File { blocks, .. } => blocks.iter().filter(|(_, b)| b.is_some()).count(),
                _ => 0,
            })
            .sum()
    }
}

fn same_meta(a: &Inode, b: &Inode) -> bool {
    a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.nlink == b.nlink && a.mtime == b.mtime && a.ctime == b.ctime
}

fn block_id(b: &Option<Block>) -> Option<u64> {
    b.as_ref().map(|b| b.id)
}

/// The delta that turns `base` (None: an empty volume, i.e. a baseline) into `target`.
pub fn diff(base: Option<&Fs>, target: &Fs) -> FsDelta {
    let empty = OrdMap::new();
    let base_inodes = base.map(|b| &b.inodes).unwrap_or(&empty);
    let mut delta = FsDelta { next_ino: target.next_ino, ..FsDelta::default() };
    if base.is_some_and(|b| b.inodes.ptr_eq(&target.inodes)) {
        return delta;
    }
    for (ino, old) in base_inodes.iter() {
        let still_same_kind = target.inodes.get(ino).is_some_and(|new| std::mem::discriminant(&new.kind) == std::mem::discriminant(&old.kind));
        if !still_same_kind {
            delta.removed.push(*ino);
        }
    }
    for (ino, new) in target.inodes.iter() {
        let old = base_inodes.get(ino).filter(|old| std::mem::discriminant(&new.kind) == std::mem::discriminant(&old.kind));
        let kind = match (&new.kind, old.map(|o| &o.kind)) {
            (InodeKind::File { size, blocks }, Some(InodeKind::File { size: old_size, blocks: old_blocks })) => {
                if blocks.ptr_eq(old_blocks) {
                    if *size == *old_size && same_meta(new, old.expect("matched")) {
                        continue;
                    }
                    KindDelta::File { size: *size, slots: blocks.len() as u64, blocks: Vec::new() }
                } else {
                    let changed: Vec<(u64, Option<BlockData>)> = blocks
                        .iter()
                        .enumerate()
                        .filter(|(i, b)| old_blocks.get(*i).map(block_id) != Some(block_id(b)) && !(b.is_none() && old_blocks.get(*i).is_none()))
                        .map(|(i, b)| (i as u64, b.as_ref().map(|b| b.data.clone())))
                        .collect();
                    if changed.is_empty() && blocks.len() == old_blocks.len() && *size == *old_size && same_meta(new, old.expect("matched")) {
                        continue;
                    }
                    KindDelta::File { size: *size, slots: blocks.len() as u64, blocks: changed }
                }
            }
            (InodeKind::File { size, blocks }, _) => KindDelta::File {
                size: *size,
                slots: blocks.len() as u64,
                blocks: blocks.iter().enumerate().filter_map(|(i, b)| b.as_ref().map(|b| (i as u64, Some(b.data.clone())))).collect(),
            },
            (InodeKind::Dir { parent, entries }, old_kind) => {
                if let (Some(InodeKind::Dir { parent: op, entries: oe }), Some(o)) = (old_kind, old) {
                    if op == parent && (oe.ptr_eq(entries) || oe == entries) && same_meta(new, o) {
                        continue;
                    }
                }
                KindDelta::Dir { parent: *parent, entries: entries.iter().map(|(n, i)| (n.clone(), *i)).collect() }
            }
            (InodeKind::Symlink { target }, old_kind) => {
                if let (Some(InodeKind::Symlink { target: ot }), Some(o)) = (old_kind, old) {
                    if ot == target && same_meta(new, o) {
                        continue;
                    }
                }
                KindDelta::Symlink { target: target.clone() }
            }
        };
        delta.changed.push(InodeDelta { ino: *ino, mode: new.mode, uid: new.uid, gid: new.gid, nlink: new.nlink, mtime: new.mtime, ctime: new.ctime, kind });
    }
    delta
}

fn free_file_blocks(inode: &Inode, ledger: &mut SpaceLedger) {
    if let InodeKind::File { blocks, .. } = &inode.kind {
        for block in blocks.iter().flatten() {
            ledger.free(block.birth);
        }
    }
}

/// Replay `delta` onto `fs` (the destination's copy of the delta's base), allocating new
/// blocks in `ledger`'s current epoch and freeing what they replace.
pub fn apply(fs: &mut Fs, delta: &FsDelta, ledger: &mut SpaceLedger) {
    for ino in &delta.removed {
        if let Some(old) = fs.inodes.remove(ino) {
            free_file_blocks(&old, ledger);
        }
    }
    let epoch = ledger.epoch();
    for change in &delta.changed {
        let kind = match &change.kind {
            KindDelta::File { size, slots, blocks } => {
                let mut list: Vector<Option<Block>> = match fs.inodes.get(&change.ino).map(|i| &i.kind) {
                    Some(InodeKind::File { blocks, .. }) => blocks.clone(),
                    _ => {
                        if let Some(old) = fs.inodes.remove(&change.ino) {
                            free_file_blocks(&old, ledger);
                        }
                        Vector::new()
                    }
                };
                let slots = *slots as usize;
                while list.len() > slots {
                    if let Some(Some(old)) = list.pop_back() {
                        ledger.free(old.birth);
                    }
                }
                while list.len() < slots {
                    list.push_back(None);
                }
                for (index, data) in blocks {
                    let Some(slot) = list.get_mut(*index as usize) else { continue };
                    if let Some(old) = slot.take() {
                        ledger.free(old.birth);
                    }
                    if let Some(data) = data {
                        ledger.alloc();
                        *slot = Some(Block::new(epoch, data.clone()));
                    }
                }
                InodeKind::File { size: *size, blocks: list }
            }
            KindDelta::Dir { parent, entries } => InodeKind::Dir { parent: *parent, entries: entries.iter().cloned().collect() },
            KindDelta::Symlink { target } => InodeKind::Symlink { target: target.clone() },
        };
        if !matches!(kind, InodeKind::File { .. }) {
            if let Some(old) = fs.inodes.get(&change.ino) {
                free_file_blocks(old, ledger);
            }
        }
        fs.inodes.insert(change.ino, Inode { ino: change.ino, kind, mode: change.mode, uid: change.uid, gid: change.gid, nlink: change.nlink, mtime: change.mtime, ctime: change.ctime });
    }
    fs.next_ino = fs.next_ino.max(delta.next_ino);
}

// ---- byte form ----

const TAG_HOLE: u8 = 0;
const TAG_DATA: u8 = 1;
const TAG_REF: u8 = 2;

/// Writes deltas into one stream; buffers seen earlier in the stream go as references.
#[derive(Default)]
pub struct Encoder {
    pub out: Vec<u8>,
    seen: HashMap<usize, u32>,
    n_buffers: u32,
}

fn put_time(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    out.extend_from_slice(&d.as_secs().to_le_bytes());
    out.extend_from_slice(&d.subsec_nanos().to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Encoder {
    pub fn put_delta(&mut self, delta: &FsDelta) {
        let out = &mut self.out;
        out.extend_from_slice(&delta.next_ino.to_le_bytes());
        out.extend_from_slice(&(delta.removed.len() as u64).to_le_bytes());
        for ino in &delta.removed {
            out.extend_from_slice(&ino.to_le_bytes());
        }
        out.extend_from_slice(&(delta.changed.len() as u64).to_le_bytes());
        for c in &delta.changed {
            let out = &mut self.out;
            out.extend_from_slice(&c.ino.to_le_bytes());
            for v in [c.mode, c.uid, c.gid, c.nlink] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            put_time(out, c.mtime);
            put_time(out, c.ctime);
            match &c.kind {
                KindDelta::File { size, slots, blocks } => {
                    out.push(0);
                    out.extend_from_slice(&size.to_le_bytes());
                    out.extend_from_slice(&slots.to_le_bytes());
                    out.extend_from_slice(&(blocks.len() as u64).to_le_bytes());
                    for (index, data) in blocks {
                        self.out.extend_from_slice(&index.to_le_bytes());
                        match data {
                            None => self.out.push(TAG_HOLE),
                            Some(data) => {
                                let key = Arc::as_ptr(data) as usize;
                                match self.seen.get(&key) {
                                    Some(n) => {
                                        self.out.push(TAG_REF);
                                        self.out.extend_from_slice(&n.to_le_bytes());
                                    }
                                    None => {
                                        self.seen.insert(key, self.n_buffers);
                                        self.n_buffers += 1;
                                        self.out.push(TAG_DATA);
                                        self.out.extend_from_slice(&data[..]);
                                    }
                                }
                            }
                        }
                    }
                }
                KindDelta::Dir { parent, entries } => {
                    out.push(1);
                    out.extend_from_slice(&parent.to_le_bytes());
                    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
                    for (name, ino) in entries {
                        put_str(out, name);
                        out.extend_from_slice(&ino.to_le_bytes());
                    }
                }
                KindDelta::Symlink { target } => {
                    out.push(2);
                    put_str(out, target);
                }
            }
        }
    }
}

/// Reads deltas from one stream (the buffers it referenced are shared, not copied).
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    buffers: Vec<BlockData>,
}

fn truncated() -> String {
    "the replication stream ended early (the transfer was interrupted)".to_string()
}

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data, pos: 0, buffers: Vec::new() }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.data.len()).ok_or_else(truncated)?;
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn time(&mut self) -> Result<SystemTime, String> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        Ok(UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999)))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a name in the replication stream is not UTF-8".to_string())
    }

    /// A count that must fit in what is left of the stream (so garbage cannot allocate).
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, String> {
        let n = self.u64()? as usize;
        if n.saturating_mul(min_item_bytes) > self.data.len() - self.pos {
            return Err(truncated());
        }
        Ok(n)
    }

    pub fn delta(&mut self) -> Result<FsDelta, String> {
        let next_ino = self.u64()?;
        let n_removed = self.count(8)?;
        let removed = (0..n_removed).map(|_| self.u64()).collect::<Result<Vec<_>, _>>()?;
        let n_changed = self.count(8)?;
        let mut changed = Vec::with_capacity(n_changed);
        for _ in 0..n_changed {
            let ino = self.u64()?;
            let (mode, uid, gid, nlink) = (self.u32()?, self.u32()?, self.u32()?, self.u32()?);
            let (mtime, ctime) = (self.time()?, self.time()?);
            let kind = match self.u8()? {
                0 => {
                    let size = self.u64()?;
                    let slots = self.u64()?;
                    if slots > size.div_ceil(BLOCK_SIZE as u64) + 1 {
                        return Err(format!("inode {ino}: {slots} block slots for {size} bytes"));
                    }
                    let n = self.count(9)?;
                    let mut blocks = Vec::with_capacity(n);
                    for _ in 0..n {
                        let index = self.u64()?;
                        if index >= slots {
                            return Err(format!("inode {ino}: block {index} past the file's {slots} slots"));
                        }
                        let data = match self.u8()? {
                            TAG_HOLE => None,
                            TAG_DATA => {
                                let bytes: [u8; BLOCK_SIZE] = self.take(BLOCK_SIZE)?.try_into().expect("block size");
                                let data = Arc::new(bytes);
                                self.buffers.push(data.clone());
                                Some(data)
                            }
                            TAG_REF => {
                                let n = self.u32()? as usize;
                                Some(self.buffers.get(n).cloned().ok_or_else(|| format!("reference to buffer {n} not yet sent"))?)
                            }
                            other => return Err(format!("unknown block tag {other}")),
                        };
                        blocks.push((index, data));
                    }
                    KindDelta::File { size, slots, blocks }
                }
                1 => {
                    let parent = self.u64()?;
                    let n = self.count(12)?;
                    let entries = (0..n).map(|_| Ok((self.string()?, self.u64()?))).collect::<Result<Vec<_>, String>>()?;
                    KindDelta::Dir { parent, entries }
                }
                2 => KindDelta::Symlink { target: self.string()? },
                other => return Err(format!("unknown inode kind {other}")),
            };
            changed.push(InodeDelta { ino, mode, uid, gid, nlink, mtime, ctime, kind });
        }
        Ok(FsDelta { next_ino, removed, changed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fs::NewInode;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn tree_equal(a: &Fs, b: &Fs) -> bool {
        let files = |fs: &Fs| -> Vec<(u64, u64, Vec<u8>)> {
            fs.inodes
                .values()
                .map(|i| match &i.kind {
                    InodeKind::File { size, .. } => (i.ino, *size, fs.read(i.ino, 0, *size as usize).unwrap()),
                    InodeKind::Dir { entries, .. } => (i.ino, 0, format!("{entries:?}").into_bytes()),
                    InodeKind::Symlink { target } => (i.ino, 1, target.clone().into_bytes()),
                })
                .collect()
        };
        files(a) == files(b)
    }

    #[test]
    fn only_changed_blocks_cross_and_apply_rebuilds_the_target() {
        let mut src_ledger = SpaceLedger::new(1 << 30, 0);
        let mut src = Fs::new(now());
        let ino = src.create_path("dir/a.dat", now()).unwrap();
        src.write(ino, 0, &vec![7u8; 100 * BLOCK_SIZE], &mut src_ledger, now()).unwrap();
        src.create_path("b.dat", now()).unwrap();
        let base = src.clone();
        src_ledger.snapshot();
        src.write(ino, 5 * BLOCK_SIZE as u64 + 10, b"changed", &mut src_ledger, now()).unwrap();
        src.write(ino, 200 * BLOCK_SIZE as u64, b"grown", &mut src_ledger, now()).unwrap();
        let root = src.resolve("").unwrap();
        src.unlink(root, "b.dat", &mut src_ledger, now()).unwrap();
        src.symlink(root, "link", "dir/a.dat", NewInode::file(now())).unwrap();

        let d = diff(Some(&base), &src);
        assert_eq!(d.data_blocks(), 2, "one overwritten block and one appended block");
        assert!(diff(Some(&src), &src).changed.is_empty());

        // Through bytes, onto a separate copy of the base with its own ledger.
        let mut enc = Encoder::default();
        enc.put_delta(&diff(None, &base));
        enc.put_delta(&d);
        let mut dec = Decoder::new(&enc.out);
        let mut dst_ledger = SpaceLedger::new(1 << 30, 0);
        let mut dst = Fs::new(now());
        apply(&mut dst, &dec.delta().unwrap(), &mut dst_ledger);
        assert!(tree_equal(&dst, &base));
        apply(&mut dst, &dec.delta().unwrap(), &mut dst_ledger);
        assert!(dec.at_end());
        assert!(tree_equal(&dst, &src));
        assert_eq!(dst_ledger.live_blocks(), src_ledger.live_blocks());
        // A cut stream is an error, never a partial delta.
        let mut cut = Decoder::new(&enc.out[..enc.out.len() - 100]);
        cut.delta().unwrap();
        assert!(cut.delta().is_err());
    }
}
