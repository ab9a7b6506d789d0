//! Space accounting from block births and deaths, without walking any tree.
//!
//! Each snapshot takes the ledger's current `epoch` and advances it; every block records the
//! epoch it was written in (`birth`). A block freed from the active file system in epoch
//! `death` is still held by exactly the snapshots whose epoch lies in `[birth, death)`
//! (the same idea as ZFS's birth times and deadlists). Counting blocks per `(birth, death)`
//! pair is enough for every figure ONTAP reports: used, snapshot used, a snapshot's
//! exclusive size, and what a SnapRestore or a clone brings back. A snapshot costs O(1);
//! the reports cost O(pairs), and pairs are bounded by snapshots squared.

use imbl::{OrdMap, OrdSet};

use super::fs::BLOCK_SIZE;

#[derive(Clone, Debug)]
pub struct SpaceLedger {
    epoch: u64,
    /// Blocks in the active file system, by birth epoch.
    live_by_birth: OrdMap<u64, u64>,
    n_live: u64,
    /// Blocks gone from the active file system but held by some snapshot: (birth, death).
    dead: OrdMap<(u64, u64), u64>,
    n_dead: u64,
    /// Epochs of the volume's snapshots.
    snapshot_epochs: OrdSet<u64>,
    /// Blocks the volume may hold in total (its size).
    size_blocks: u64,
    reserve_percent: u64,
}

impl SpaceLedger {
    pub fn new(size_bytes: u64, reserve_percent: u64) -> Self {
        SpaceLedger {
            epoch: 0,
            live_by_birth: OrdMap::new(),
            n_live: 0,
            dead: OrdMap::new(),
            n_dead: 0,
            snapshot_epochs: OrdSet::new(),
            size_blocks: size_bytes / BLOCK_SIZE as u64,
            reserve_percent,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn set_size(&mut self, size_bytes: u64) {
        self.size_blocks = size_bytes / BLOCK_SIZE as u64;
    }

    pub fn set_reserve_percent(&mut self, percent: u64) {
        self.reserve_percent = percent;
    }

    /// Is a live block born in `birth` held by some snapshot (so overwriting it keeps it)?
    pub fn held_by_snapshot(&self, birth: u64) -> bool {
        self.snapshot_epochs.range(birth..).next().is_some()
    }

    fn any_snapshot_in(&self, birth: u64, death: u64) -> bool {
        self.snapshot_epochs.range(birth..death).next().is_some()
    }

    pub fn alloc(&mut self) {
        *self.live_by_birth.entry(self.epoch).or_insert(0) += 1;
        self.n_live += 1;
    }

    pub fn free(&mut self, birth: u64) {
        let count = self.live_by_birth.get_mut(&birth).expect("freed block was counted live");
        *count -= 1;
        if *count == 0 {
            self.live_by_birth.remove(&birth);
        }
        self.n_live -= 1;
        if self.any_snapshot_in(birth, self.epoch) {
            *self.dead.entry((birth, self.epoch)).or_insert(0) += 1;
            self.n_dead += 1;
        }
    }

    /// Record a snapshot of the active file system; returns its epoch.
    pub fn snapshot(&mut self) -> u64 {
        let epoch = self.epoch;
        self.snapshot_epochs.insert(epoch);
        self.epoch += 1;
        epoch
    }

    /// Forget a snapshot: blocks no other snapshot holds are freed.
    pub fn delete_snapshot(&mut self, epoch: u64) {
        self.snapshot_epochs.remove(&epoch);
        let orphaned: Vec<(u64, u64)> = self
            .dead
            .keys()
            .filter(|(birth, death)| *birth <= epoch && epoch < *death && !self.any_snapshot_in(*birth, *death))
            .copied()
            .collect();
        for key in orphaned {
            self.n_dead -= self.dead.remove(&key).unwrap_or(0);
        }
    }

    /// Blocks the snapshot taken at `epoch` holds, by birth: what a restore or clone of it
    /// puts in an active file system.
    pub fn held_by(&self, epoch: u64) -> OrdMap<u64, u64> {
        let mut held: OrdMap<u64, u64> = self.live_by_birth.range(..=epoch).map(|(b, c)| (*b, *c)).collect();
        for ((birth, death), count) in self.dead.iter() {
            if *birth <= epoch && epoch < *death {
                *held.entry(*birth).or_insert(0) += count;
            }
        }
        held
    }

    /// SnapRestore to the snapshot at `epoch`. The caller has already deleted every newer
    /// snapshot (via `delete_snapshot`), as ONTAP does.
    pub fn restore(&mut self, epoch: u64) {
        debug_assert!(self.snapshot_epochs.range(epoch + 1..).next().is_none());
        let held = self.held_by(epoch);
        // Blocks the snapshot holds that were dead are live again; the rest of `dead` stays
        // with the older snapshots.
        let resurrected: Vec<(u64, u64)> =
            self.dead.keys().filter(|(birth, death)| *birth <= epoch && epoch < *death).copied().collect();
        for key in resurrected {
            self.n_dead -= self.dead.remove(&key).unwrap_or(0);
        }
        self.n_live = held.values().sum();
        self.live_by_birth = held;
    }

    /// The ledger of a FlexClone made from the snapshot at `epoch`: the clone's active file
    /// system holds what the snapshot holds, and it has no snapshots of its own yet.
    pub fn for_clone(&self, epoch: u64, size_bytes: u64) -> SpaceLedger {
        let held = self.held_by(epoch);
        SpaceLedger {
            // Any epoch above every inherited birth keeps the interval rule true in the clone.
            epoch: self.epoch,
            n_live: held.values().sum(),
            live_by_birth: held,
            dead: OrdMap::new(),
            n_dead: 0,
            snapshot_epochs: OrdSet::new(),
            size_blocks: size_bytes / BLOCK_SIZE as u64,
            reserve_percent: self.reserve_percent,
        }
    }

    /// Bytes held exclusively by the snapshot at `epoch` (ONTAP's snapshot `size`): what
    /// deleting it would free.
    pub fn exclusive_bytes(&self, epoch: u64) -> u64 {
        let blocks: u64 = self
            .dead
            .iter()
            .filter(|((birth, death), _)| {
                *birth <= epoch && epoch < *death && self.snapshot_epochs.range(*birth..*death).take(2).count() == 1
            })
            .map(|(_, count)| *count)
            .sum();
        blocks * BLOCK_SIZE as u64
    }

    pub fn live_blocks(&self) -> u64 {
        self.n_live
    }

    pub fn snapshot_blocks(&self) -> u64 {
        self.n_dead
    }

    pub fn reserve_blocks(&self) -> u64 {
        self.size_blocks * self.reserve_percent / 100
    }

    /// Blocks the active file system may still allocate: snapshot data beyond the reserve
    /// spills into the active file system's space, as on ONTAP.
    pub fn available_blocks(&self) -> u64 {
        self.size_blocks.saturating_sub(self.reserve_blocks().max(self.n_dead)).saturating_sub(self.n_live)
    }

    pub fn report(&self) -> SpaceReport {
        let block = BLOCK_SIZE as u64;
        SpaceReport {
            size: self.size_blocks * block,
            used: self.n_live * block,
            available: self.available_blocks() * block,
            snapshot_used: self.n_dead * block,
            snapshot_reserve_size: self.reserve_blocks() * block,
            snapshot_reserve_percent: self.reserve_percent,
        }
    }
}

/// The figures ONTAP reports under `space` for a volume, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceReport {
    pub size: u64,
    pub used: u64,
    pub available: u64,
    pub snapshot_used: u64,
    pub snapshot_reserve_size: u64,
    pub snapshot_reserve_percent: u64,
}
