//! A FlexVol: its active file system, its snapshots and its space ledger.
//!
//! Every rule here is ONTAP's and every refusal carries ONTAP's error code, but nothing here
//! knows HTTP or JSON.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use imbl::{OrdSet, Vector};

use super::fs::{BlockData, Fs, FsError, FsResult, BLOCK_SIZE};
use super::space::{SpaceLedger, SpaceReport};
use crate::error::{ErrorKind, OntapError, SimResult};

/// ONTAP allows 1023 snapshots per volume.
pub const SNAPSHOTS_PER_VOLUME_MAX: usize = 1023;
/// Longest volume name ONTAP accepts.
pub const VOLUME_NAME_LEN_MAX: usize = 203;
/// Longest snapshot name ONTAP accepts.
pub const SNAPSHOT_NAME_LEN_MAX: usize = 255;
pub const OWNER_VOLUME_CLONE: &str = "volume_clone";
/// Smallest volume ONTAP creates (20 MiB).
pub const VOLUME_SIZE_MIN: u64 = 20 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeState {
    Online,
    Offline,
    Restricted,
}

impl VolumeState {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Online => "online",
            VolumeState::Offline => "offline",
            VolumeState::Restricted => "restricted",
        }
    }
    pub fn parse(s: &str) -> SimResult<Self> {
        match s {
            "online" => Ok(VolumeState::Online),
            "offline" => Ok(VolumeState::Offline),
            "restricted" => Ok(VolumeState::Restricted),
            other => Err(OntapError::new(
                ErrorKind::Invalid,
                918652,
                format!("\"{other}\" is an invalid value for field \"-state\". Valid values are \"online\", \"offline\" and \"restricted\"."),
            )
            .with_target("state")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeType {
    /// Read-write.
    Rw,
    /// Data protection: a SnapMirror destination, read-only to clients.
    Dp,
}

impl VolumeType {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeType::Rw => "rw",
            VolumeType::Dp => "dp",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub uuid: String,
    pub name: String,
    /// The same on every copy of this snapshot (source and SnapMirror destinations), so two
    /// volumes can find their common snapshots.
    pub version_uuid: String,
    pub epoch: u64,
    pub fs: Fs,
    pub create_time: DateTime<Utc>,
    pub comment: Option<String>,
    pub snapmirror_label: Option<String>,
    pub expiry_time: Option<DateTime<Utc>>,
    /// FlexClones made from this snapshot; while any exists it is owned by `volume_clone`.
    pub clone_uuids: OrdSet<String>,
}

impl Snapshot {
    pub fn owners(&self) -> Vec<&'static str> {
        if self.clone_uuids.is_empty() {
            Vec::new()
        } else {
            vec![OWNER_VOLUME_CLONE]
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Named {
    pub uuid: String,
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct CloneParent {
    pub volume: Named,
    pub snapshot: Named,
    pub split_initiated: bool,
}

#[derive(Clone, Debug)]
pub struct Volume {
    pub uuid: String,
    pub name: String,
    pub svm: Named,
    pub aggregate: Named,
    pub state: VolumeState,
    pub vtype: VolumeType,
    pub comment: Option<String>,
    pub junction_path: Option<String>,
    pub create_time: DateTime<Utc>,
    pub fs: Fs,
    pub ledger: SpaceLedger,
    /// Oldest first, as ONTAP lists them.
    pub snapshots: Vector<Snapshot>,
    pub clone: Option<CloneParent>,
    /// Documented, settable fields the simulator does not model (e.g. `efficiency.policy`),
    /// by dotted path: stored so they read back as set, as idempotent tools check.
    pub extras: imbl::OrdMap<String, serde_json::Value>,
    /// Creation order, for listing.
    pub seq: u64,
}

pub fn validate_volume_name(name: &str) -> SimResult<()> {
    if name.len() > VOLUME_NAME_LEN_MAX {
        return Err(OntapError::new(ErrorKind::Invalid, 917886, "Volume name is too long. It must be 203 characters or less.").with_target("name"));
    }
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => {
            return Err(OntapError::new(ErrorKind::Invalid, 917887, "The first character of the volume name must be a letter or underscore.").with_target("name"))
        }
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
        return Err(OntapError::new(
            ErrorKind::Invalid,
            917888,
            format!("Invalid character \"{bad}\" in volume name \"{name}\". Volume names can contain only letters, numbers and the underscore character."),
        )
        .with_target("name"));
    }
    Ok(())
}

pub fn validate_snapshot_name(name: &str, code: u64) -> SimResult<()> {
    let ok = !name.is_empty()
        && name.len() <= SNAPSHOT_NAME_LEN_MAX
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
        && name != "."
        && name != "..";
    if !ok {
        let message = if code == 524508 {
            "The snapshot was not renamed because the name entered is not valid."
        } else {
            "The specified snapshot name is invalid."
        };
        return Err(OntapError::new(ErrorKind::Invalid, code, message).with_target("name"));
    }
    Ok(())
}

/// A junction path is absolute, has no empty, `.` or `..` components, and is not the root.
pub fn validate_junction_path(path: &str) -> SimResult<()> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && path.len() <= 255
        && path[1..].split('/').all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\0'));
    if ok {
        Ok(())
    } else {
        Err(OntapError::new(ErrorKind::Invalid, 918252, "\"nas.path\" is invalid.").with_target("nas.path"))
    }
}

fn fs_error(e: FsError) -> OntapError {
    match e {
        FsError::NotFound(what) => OntapError::new(ErrorKind::NotFound, 4, format!("entry doesn't exist: {what}")),
        FsError::NoSpace => OntapError::new(ErrorKind::Refused, 524479, "The specified volume does not have enough space."),
        other => OntapError::new(ErrorKind::Invalid, 2, other.to_string()),
    }
}

impl Volume {
    #[allow(clippy::too_many_arguments)]
    pub fn new(uuid: String, name: String, svm: Named, aggregate: Named, size: u64, reserve_percent: u64, now: DateTime<Utc>, seq: u64) -> Self {
        Volume {
            uuid,
            name,
            svm,
            aggregate,
            state: VolumeState::Online,
            vtype: VolumeType::Rw,
            comment: None,
            junction_path: None,
            create_time: now,
            fs: Fs::new(now.into()),
            ledger: SpaceLedger::new(size, reserve_percent),
            snapshots: Vector::new(),
            clone: None,
            extras: imbl::OrdMap::new(),
            seq,
        }
    }

    pub fn space(&self) -> SpaceReport {
        self.ledger.report()
    }

    pub fn snapshot_by_name(&self, name: &str) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    pub fn snapshot_by_uuid(&self, uuid: &str) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.uuid == uuid)
    }

    fn snapshot_index(&self, uuid: &str) -> SimResult<usize> {
        self.snapshots
            .iter()
            .position(|s| s.uuid == uuid)
            .ok_or_else(|| OntapError::new(ErrorKind::NotFound, 1638600, "The snapshot does not exist.").with_target("uuid"))
    }

    pub fn snapshot_size(&self, snapshot: &Snapshot) -> u64 {
        self.ledger.exclusive_bytes(snapshot.epoch)
    }

    /// Checks for a snapshot create; shared by volume and consistency-group snapshots so a
    /// group snapshot either fits every member or touches none.
    pub fn check_snapshot_create(&self, name: &str) -> SimResult<()> {
        validate_snapshot_name(name, 1638518)?;
        if self.state != VolumeState::Online {
            return Err(OntapError::new(ErrorKind::Refused, 524479, "The specified volume is not online or does not have enough space to create a snapshot."));
        }
        if self.vtype != VolumeType::Rw {
            return Err(OntapError::new(ErrorKind::Refused, 1638461, "Snapshots can only be created on read/write (RW) volumes."));
        }
        if self.snapshot_by_name(name).is_some() {
            return Err(OntapError::new(ErrorKind::Duplicate, 525059, "A snapshot with the specified name already exists.").with_target("name"));
        }
        if self.snapshots.len() >= SNAPSHOTS_PER_VOLUME_MAX {
            return Err(OntapError::new(ErrorKind::Refused, 525062, "Cannot exceed maximum number of snapshots."));
        }
        Ok(())
    }

    /// O(1) whatever the volume holds: the snapshot shares the active tree's root.
    pub fn create_snapshot(&mut self, uuid: String, name: &str, now: DateTime<Utc>) -> SimResult<&Snapshot> {
        self.check_snapshot_create(name)?;
        let epoch = self.ledger.snapshot();
        self.snapshots.push_back(Snapshot {
            version_uuid: uuid.clone(),
            uuid,
            name: name.to_string(),
            epoch,
            fs: self.fs.clone(),
            create_time: now,
            comment: None,
            snapmirror_label: None,
            expiry_time: None,
            clone_uuids: OrdSet::new(),
        });
        Ok(self.snapshots.back().expect("just pushed"))
    }

    /// A snapshot arriving by SnapMirror: taken of the active file system (which the
    /// transfer just made equal to the source's snapshot), keeping the source's identity.
    /// Allowed on DP volumes, unlike a client's snapshot create.
    pub fn add_replica_snapshot(&mut self, uuid: String, meta: &super::snapmirror::SnapshotMeta) -> SimResult<()> {
        if self.snapshots.len() >= SNAPSHOTS_PER_VOLUME_MAX {
            return Err(OntapError::new(ErrorKind::Refused, 525062, "Cannot exceed maximum number of snapshots."));
        }
        let epoch = self.ledger.snapshot();
        self.snapshots.push_back(Snapshot {
            uuid,
            name: meta.name.clone(),
            version_uuid: meta.version_uuid.clone(),
            epoch,
            fs: self.fs.clone(),
            create_time: meta.create_time,
            comment: meta.comment.clone(),
            snapmirror_label: meta.snapmirror_label.clone(),
            expiry_time: None,
            clone_uuids: OrdSet::new(),
        });
        Ok(())
    }

    /// SnapMirror retention on a destination (not a client's delete, which DP refuses).
    pub fn remove_replica_snapshot(&mut self, uuid: &str) {
        if let Some(index) = self.snapshots.iter().position(|s| s.uuid == uuid) {
            let snapshot = self.snapshots.remove(index);
            self.ledger.delete_snapshot(snapshot.epoch);
        }
    }

    pub fn check_snapshot_delete(&self, uuid: &str) -> SimResult<usize> {
        let index = self.snapshot_index(uuid)?;
        if !self.snapshots[index].clone_uuids.is_empty() {
            return Err(OntapError::new(ErrorKind::Refused, 1638543, "Failed to delete snapshot because it has an owner."));
        }
        if self.vtype != VolumeType::Rw {
            return Err(OntapError::new(ErrorKind::Refused, 1638521, "Snapshots can only be deleted on read/write (RW) volumes."));
        }
        Ok(index)
    }

    pub fn delete_snapshot(&mut self, uuid: &str) -> SimResult<Snapshot> {
        let index = self.check_snapshot_delete(uuid)?;
        let snapshot = self.snapshots.remove(index);
        self.ledger.delete_snapshot(snapshot.epoch);
        Ok(snapshot)
    }

    pub fn rename_snapshot(&mut self, uuid: &str, new_name: &str) -> SimResult<()> {
        let index = self.snapshot_index(uuid)?;
        validate_snapshot_name(new_name, 524508)?;
        if self.snapshots[index].name == new_name {
            return Ok(());
        }
        if self.snapshot_by_name(new_name).is_some() {
            return Err(OntapError::new(ErrorKind::Duplicate, 525059, "A snapshot with the specified name already exists.").with_target("name"));
        }
        self.snapshots[index].name = new_name.to_string();
        Ok(())
    }

    pub fn snapshot_mut(&mut self, uuid: &str) -> SimResult<&mut Snapshot> {
        let index = self.snapshot_index(uuid)?;
        Ok(&mut self.snapshots[index])
    }

    /// SnapRestore: the active file system becomes the snapshot's tree and every newer
    /// snapshot is deleted. Refused, changing nothing, if a newer snapshot has an owner.
    pub fn restore(&mut self, snapshot_name: &str) -> SimResult<()> {
        let index = self
            .snapshots
            .iter()
            .position(|s| s.name == snapshot_name)
            .ok_or_else(|| OntapError::new(ErrorKind::NotFound, 524511, format!("Failed to restore snapshot \"{snapshot_name}\".")).with_target("restore_to.snapshot.name"))?;
        if self.snapshots.iter().skip(index + 1).any(|s| !s.clone_uuids.is_empty()) {
            return Err(OntapError::new(
                ErrorKind::Refused,
                1638480,
                format!("Failed to promote snapshot \"{snapshot_name}\" because one or more newer snapshots are currently used as a reference snapshot for data protection operations."),
            ));
        }
        if self.state != VolumeState::Online {
            return Err(OntapError::new(ErrorKind::Refused, 917775, format!("Volume \"{}:{}\" is not online.", self.svm.name, self.name)));
        }
        while self.snapshots.len() > index + 1 {
            let newer = self.snapshots.pop_back().expect("len checked");
            self.ledger.delete_snapshot(newer.epoch);
        }
        let target = &self.snapshots[index];
        self.ledger.restore(target.epoch);
        let mut fs = target.fs.clone();
        fs.raise_next_ino(self.fs.next_ino());
        self.fs = fs;
        Ok(())
    }

    /// The starting state of a FlexClone of this volume's snapshot `snapshot_uuid`.
    pub fn clone_source(&self, snapshot_uuid: &str, size: u64) -> SimResult<(Fs, SpaceLedger)> {
        let snapshot = self.snapshot_by_uuid(snapshot_uuid).ok_or_else(|| OntapError::not_found("snapshot"))?;
        Ok((snapshot.fs.clone(), self.ledger.for_clone(snapshot.epoch, size)))
    }

    fn writable(&self) -> SimResult<()> {
        if self.vtype == VolumeType::Dp {
            return Err(fs_error(FsError::ReadOnly));
        }
        if self.state != VolumeState::Online {
            return Err(OntapError::new(ErrorKind::Refused, 917775, format!("Volume \"{}:{}\" is not online.", self.svm.name, self.name)));
        }
        Ok(())
    }

    // ---- data plane by path (control API, simulated database) ----

    /// Write bytes at `offset` of the file at `path`, creating it and its directories.
    pub fn write_file(&mut self, path: &str, offset: u64, data: &[u8], now: SystemTime) -> SimResult<()> {
        self.writable()?;
        // Files are stored densely (one slot per block, holes included): a file may not reach
        // past the volume's size, or a write at an absurd offset would exhaust memory.
        let size = self.space().size;
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > size) {
            return Err(OntapError::invalid_field("offset", format!("A file cannot extend past the volume's size ({size} bytes).")));
        }
        // Work on a copy so that a refused write (no space) leaves nothing half-created.
        let mut fs = self.fs.clone();
        let mut ledger = self.ledger.clone();
        let ino = fs.create_path(path, now).map_err(fs_error)?;
        fs.write(ino, offset, data, &mut ledger, now).map_err(fs_error)?;
        self.fs = fs;
        self.ledger = ledger;
        Ok(())
    }

    /// Replace the whole content of the file at `path`.
    pub fn put_file(&mut self, path: &str, data: &[u8], now: SystemTime) -> SimResult<()> {
        self.writable()?;
        let mut fs = self.fs.clone();
        let mut ledger = self.ledger.clone();
        let ino = fs.create_path(path, now).map_err(fs_error)?;
        fs.truncate(ino, 0, &mut ledger, now).map_err(fs_error)?;
        fs.write(ino, 0, data, &mut ledger, now).map_err(fs_error)?;
        self.fs = fs;
        self.ledger = ledger;
        Ok(())
    }

    pub fn truncate_file(&mut self, path: &str, size: u64, now: SystemTime) -> SimResult<()> {
        self.writable()?;
        let ino = self.fs.resolve(path).map_err(fs_error)?;
        self.fs.truncate(ino, size, &mut self.ledger, now).map_err(fs_error)
    }

    pub fn remove_file(&mut self, path: &str, now: SystemTime) -> SimResult<()> {
        self.writable()?;
        let (parent, name) = split_parent(&self.fs, path)?;
        self.fs.unlink(parent, &name, &mut self.ledger, now).map_err(fs_error)
    }

    pub fn mkdir(&mut self, path: &str, now: SystemTime) -> SimResult<()> {
        self.writable()?;
        let (parent, name) = split_parent(&self.fs, path)?;
        self.fs.mkdir(parent, &name, super::fs::NewInode::dir(now)).map(|_| ()).map_err(fs_error)
    }

    pub fn rename(&mut self, from: &str, to: &str, now: SystemTime) -> SimResult<()> {
        self.writable()?;
        let (parent, name) = split_parent(&self.fs, from)?;
        let (new_parent, new_name) = split_parent(&self.fs, to)?;
        self.fs.rename(parent, &name, new_parent, &new_name, &mut self.ledger, now).map_err(fs_error)
    }

    /// Fill `path` with `bytes` of synthetic data from `seed`: a few distinct 4 KiB buffers
    /// repeated, one tree entry per block, so a 16 GiB fill costs megabytes, not gigabytes.
    pub fn fill(&mut self, path: &str, bytes: u64, seed: u64, now: SystemTime) -> SimResult<()> {
        self.writable()?;
        let n_blocks = bytes.div_ceil(BLOCK_SIZE as u64);
        if n_blocks > self.ledger.available_blocks() {
            return Err(fs_error(FsError::NoSpace));
        }
        let pool = synthetic_blocks(seed);
        let ino = self.fs.create_path(path, now).map_err(fs_error)?;
        let mut state = seed;
        let data = (0..n_blocks).map(|_| {
            state = splitmix64(state);
            pool[(state % pool.len() as u64) as usize].clone()
        });
        self.fs.write_shared_blocks(ino, 0, data, &mut self.ledger, now).map_err(fs_error)?;
        // A fill of a byte count that is not a multiple of 4 KiB ends where asked.
        if !bytes.is_multiple_of(BLOCK_SIZE as u64) {
            self.fs.truncate(ino, bytes, &mut self.ledger, now).map_err(fs_error)?;
        }
        Ok(())
    }
}

/// Read helpers shared by the active file system and snapshots.
pub fn read_file(fs: &Fs, path: &str, offset: u64, len: Option<u64>) -> SimResult<Vec<u8>> {
    let ino = fs.resolve(path).map_err(fs_error)?;
    let size = fs.inode(ino).map_err(fs_error)?.size();
    let len = len.unwrap_or(size.saturating_sub(offset));
    fs.read(ino, offset, len as usize).map_err(fs_error)
}

pub fn list_dir(fs: &Fs, path: &str) -> SimResult<Vec<(String, super::fs::FileType, u64)>> {
    let ino = fs.resolve(path).map_err(fs_error)?;
    fs.readdir(ino)
        .map_err(fs_error)?
        .into_iter()
        .map(|(name, child, kind)| Ok((name, kind, fs.inode(child).map_err(fs_error)?.size())))
        .collect()
}

fn split_parent(fs: &Fs, path: &str) -> SimResult<(u64, String)> {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() {
        return Err(OntapError::invalid_field("path", format!("\"{path}\" names no file.")));
    }
    Ok((fs.resolve(dir).map_err(fs_error)?, name.to_string()))
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sixteen distinct pseudo-random blocks derived from `seed`.
fn synthetic_blocks(seed: u64) -> Vec<BlockData> {
    (0..16u64)
        .map(|i| {
            let mut block = [0u8; BLOCK_SIZE];
            let mut state = splitmix64(seed ^ (i << 56));
            for chunk in block.chunks_mut(8) {
                state = splitmix64(state);
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            std::sync::Arc::new(block)
        })
        .collect()
}

pub fn fs_result<T>(r: FsResult<T>) -> SimResult<T> {
    r.map_err(fs_error)
}
