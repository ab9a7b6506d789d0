//! One simulated ONTAP cluster: SVMs, aggregates, volumes, consistency groups and jobs.
//!
//! The state is made of persistent maps, so cloning it is cheap: the API layer runs every
//! request against a clone and commits only on success, which is how "a failed request never
//! half-changes anything" holds without per-operation undo code.

use chrono::{DateTime, Utc};
use imbl::{OrdMap, Vector};

use super::volume::{validate_junction_path, validate_volume_name, CloneParent, Named, Volume, VolumeState, VolumeType, VOLUME_SIZE_MIN};
use crate::error::{ErrorKind, OntapError, SimResult};

#[derive(Clone, Debug)]
pub struct Aggregate {
    pub uuid: String,
    pub name: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Copy)]
pub enum JobState {
    Queued,
    Running,
    Success,
    Failure,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Success => "success",
            JobState::Failure => "failure",
        }
    }
    pub fn is_done(self) -> bool {
        matches!(self, JobState::Success | JobState::Failure)
    }
}

#[derive(Clone, Debug)]
pub struct Job {
    pub uuid: String,
    pub description: String,
    pub state: JobState,
    pub message: String,
    pub code: u64,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub seq: u64,
}

#[derive(Clone, Debug)]
pub struct CgSnapshot {
    pub uuid: String,
    pub name: String,
    pub create_time: DateTime<Utc>,
    pub comment: Option<String>,
    /// (volume uuid, snapshot uuid) of each member's snapshot.
    pub members: Vec<(String, String)>,
    pub seq: u64,
}

#[derive(Clone, Debug)]
pub struct ConsistencyGroup {
    pub uuid: String,
    pub name: String,
    pub svm: Named,
    pub volumes: Vec<Named>,
    pub snapshots: Vector<CgSnapshot>,
    pub seq: u64,
}

/// Select an object by name and/or uuid, as ONTAP request bodies do (`{"name": ..}`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub name: Option<String>,
    pub uuid: Option<String>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.uuid.is_none()
    }
    fn matches(&self, named: &Named) -> bool {
        self.name.as_deref().is_none_or(|n| n == named.name) && self.uuid.as_deref().is_none_or(|u| u == named.uuid)
    }
}

#[derive(Clone, Debug, Default)]
pub struct CloneRequest {
    pub parent_volume: Selector,
    pub parent_snapshot: Selector,
}

#[derive(Clone, Debug, Default)]
pub struct VolumeCreate {
    pub name: String,
    pub svm: Selector,
    pub aggregates: Vec<Selector>,
    pub size: Option<u64>,
    pub comment: Option<String>,
    pub junction_path: Option<String>,
    pub reserve_percent: Option<u64>,
    pub state: Option<VolumeState>,
    pub vtype: Option<VolumeType>,
    pub clone: Option<CloneRequest>,
}

#[derive(Clone, Debug, Default)]
pub struct VolumeModify {
    pub name: Option<String>,
    pub size: Option<u64>,
    pub comment: Option<String>,
    pub junction_path: Option<Option<String>>,
    pub reserve_percent: Option<u64>,
    pub state: Option<VolumeState>,
    pub split_clone: bool,
}

#[derive(Clone, Debug, Default)]
pub struct SnapshotModify {
    pub name: Option<String>,
    pub comment: Option<String>,
    pub snapmirror_label: Option<String>,
    pub expiry_time: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub name: String,
    pub svms: Vec<String>,
    pub aggregate: String,
    pub aggregate_size: u64,
    /// Seeds the uuids the cluster hands out, so a seeded run is reproducible.
    pub seed: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "sim-a".into(),
            svms: vec!["svm0".into()],
            aggregate: "aggr1".into(),
            aggregate_size: 1 << 50,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClusterState {
    pub name: String,
    pub uuid: String,
    pub svms: Vector<Named>,
    pub aggregates: Vector<Aggregate>,
    pub volumes: OrdMap<String, Volume>,
    pub cgs: OrdMap<String, ConsistencyGroup>,
    pub jobs: OrdMap<String, Job>,
    pub cluster_peers: OrdMap<String, super::peering::ClusterPeer>,
    pub svm_peers: OrdMap<String, super::peering::SvmPeer>,
    /// SnapMirror relationships whose destination is on this cluster, as ONTAP lists them.
    pub relationships: OrdMap<String, super::snapmirror::Relationship>,
    /// Source volumes of Sync relationships (on the source cluster), by volume uuid.
    pub sync_sources: OrdMap<String, super::snapmirror::SyncSource>,
    /// Finished jobs by `seq` (oldest first), so evicting the oldest is O(log n), not a scan.
    finished_jobs: OrdMap<u64, String>,
    seq: u64,
    uuid_state: u64,
}

/// The ONTAP version the simulator speaks.
pub const VERSION_FULL: &str = "NetApp Release 9.19.1: ontap-sim";
pub const VERSION: (u32, u32, u32) = (9, 19, 1);
/// Jobs kept for clients to poll; older finished ones are forgotten, as ONTAP's job table is.
pub const JOBS_KEPT_MAX: usize = 4096;
const DEFAULT_VOLUME_SIZE: u64 = VOLUME_SIZE_MIN;
const DEFAULT_RESERVE_PERCENT: u64 = 5;

impl ClusterState {
    pub fn new(config: &ClusterConfig) -> Self {
        let mut state = ClusterState {
            name: config.name.clone(),
            uuid: String::new(),
            svms: Vector::new(),
            aggregates: Vector::new(),
            volumes: OrdMap::new(),
            cgs: OrdMap::new(),
            jobs: OrdMap::new(),
            cluster_peers: OrdMap::new(),
            svm_peers: OrdMap::new(),
            relationships: OrdMap::new(),
            sync_sources: OrdMap::new(),
            finished_jobs: OrdMap::new(),
            seq: 0,
            // The name goes in too: two clusters with the same seed must not share uuids
            // (peering refuses a cluster with its own uuid).
            uuid_state: config.seed ^ 0x5354_4153_4953 ^ config.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)),
        };
        state.uuid = state.new_uuid();
        for svm in &config.svms {
            let uuid = state.new_uuid();
            state.svms.push_back(Named { uuid, name: svm.clone() });
        }
        let uuid = state.new_uuid();
        state.aggregates.push_back(Aggregate { uuid, name: config.aggregate.clone(), size: config.aggregate_size });
        state
    }

    /// A version-4-shaped uuid from the seeded generator.
    pub fn new_uuid(&mut self) -> String {
        let mut next = || {
            self.uuid_state = self.uuid_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.uuid_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let (a, b) = (next(), next());
        let bytes: u128 = ((a as u128) << 64 | b as u128) & !(0xF000u128 << 64 | 0xC000u128 << 48) | (0x4000u128 << 64) | (0x8000u128 << 48);
        let hex = format!("{bytes:032x}");
        format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn find_svm(&self, sel: &Selector) -> SimResult<Named> {
        if sel.is_empty() {
            return Err(OntapError::new(ErrorKind::Invalid, 2621707, "No SVM was specified. Either \"svm.name\" or \"svm.uuid\" must be supplied.").with_target("svm"));
        }
        if let (Some(name), Some(uuid)) = (&sel.name, &sel.uuid) {
            let by_name = self.svms.iter().find(|s| &s.name == name);
            if by_name.is_some_and(|s| &s.uuid != uuid) {
                return Err(OntapError::new(ErrorKind::Invalid, 2621706, "The specified \"svm.uuid\" and \"svm.name\" do not refer to the same SVM.").with_target("svm"));
            }
        }
        self.svms
            .iter()
            .find(|s| sel.matches(s))
            .cloned()
            .ok_or_else(|| OntapError::new(ErrorKind::NotFound, 2621462, "The target SVM does not exist.").with_target("svm"))
    }

    pub fn volume(&self, uuid: &str) -> SimResult<&Volume> {
        self.volumes.get(uuid).ok_or_else(|| OntapError::not_found("volume").with_target("uuid"))
    }

    pub fn volume_mut(&mut self, uuid: &str) -> SimResult<&mut Volume> {
        self.volumes.get_mut(uuid).ok_or_else(|| OntapError::not_found("volume").with_target("uuid"))
    }

    fn volume_in_svm(&self, svm: &Named, sel: &Selector) -> Option<&Volume> {
        self.volumes.values().find(|v| v.svm.uuid == svm.uuid && sel.matches(&Named { uuid: v.uuid.clone(), name: v.name.clone() }))
    }

    pub fn volumes_in_order(&self) -> Vec<&Volume> {
        let mut volumes: Vec<&Volume> = self.volumes.values().collect();
        volumes.sort_by_key(|v| v.seq);
        volumes
    }

    pub fn create_volume(&mut self, req: VolumeCreate, now: DateTime<Utc>) -> SimResult<String> {
        validate_volume_name(&req.name)?;
        let svm = self.find_svm(&req.svm)?;
        if self.volume_in_svm(&svm, &Selector { name: Some(req.name.clone()), uuid: None }).is_some() {
            return Err(OntapError::new(ErrorKind::Duplicate, 917526, "The volume name specified is a duplicate.").with_target("name"));
        }
        if let Some(path) = &req.junction_path {
            self.check_junction_free(&svm, path, None)?;
        }
        if let Some(percent) = req.reserve_percent {
            if percent > 90 {
                return Err(OntapError::new(ErrorKind::Invalid, 917835, "Maximum allowed snapshot.reserve_percent value during a volume creation is 90. Use PATCH to set it to a higher value after the volume has been created.").with_target("space.snapshot.reserve_percent"));
            }
        }
        let seq = self.next_seq();
        let uuid = self.new_uuid();
        let volume = match &req.clone {
            Some(clone) => self.new_clone(&req, clone, &svm, uuid.clone(), now, seq)?,
            None => {
                let aggregate = self.pick_aggregate(&req.aggregates)?;
                let size = req.size.unwrap_or(DEFAULT_VOLUME_SIZE);
                if size < VOLUME_SIZE_MIN {
                    return Err(OntapError::new(ErrorKind::Invalid, 917534, "The value specified for field \"-size\" is too small. Update the field \"-size\" with the minimum size allowed and retry.").with_target("size"));
                }
                let mut volume = Volume::new(uuid.clone(), req.name.clone(), svm, aggregate, size, req.reserve_percent.unwrap_or(DEFAULT_RESERVE_PERCENT), now, seq);
                volume.vtype = req.vtype.unwrap_or(VolumeType::Rw);
                volume
            }
        };
        let mut volume = volume;
        volume.comment = req.comment.clone();
        volume.junction_path = req.junction_path.clone();
        if let Some(state) = req.state {
            volume.state = state;
        }
        self.volumes.insert(uuid.clone(), volume);
        Ok(uuid)
    }

    fn pick_aggregate(&self, sels: &[Selector]) -> SimResult<Named> {
        match sels {
            [] => Err(OntapError::new(ErrorKind::Invalid, 787140, "One of \"aggregates.uuid\", \"aggregates.name\", or \"style\" must be provided.").with_target("aggregates")),
            [sel] => self
                .aggregates
                .iter()
                .map(|a| Named { uuid: a.uuid.clone(), name: a.name.clone() })
                .find(|a| sel.matches(a))
                .ok_or_else(|| OntapError::new(ErrorKind::NotFound, 917508, "The target aggregate could not be found.").with_target("aggregates")),
            _ => Err(OntapError::new(ErrorKind::Invalid, 918242, "When creating a flexible volume, exactly one aggregate must be specified via either \"aggregates.name\" or \"aggregates.uuid\".").with_target("aggregates")),
        }
    }

    fn check_junction_free(&self, svm: &Named, path: &str, except: Option<&str>) -> SimResult<()> {
        validate_junction_path(path)?;
        let taken = self.volumes.values().any(|v| v.svm.uuid == svm.uuid && Some(v.uuid.as_str()) != except && v.junction_path.as_deref() == Some(path));
        if taken {
            return Err(OntapError::new(ErrorKind::Invalid, 918252, format!("\"nas.path\" is invalid: junction path \"{path}\" is already in use.")).with_target("nas.path"));
        }
        Ok(())
    }

    fn new_clone(&mut self, req: &VolumeCreate, clone: &CloneRequest, svm: &Named, uuid: String, now: DateTime<Utc>, seq: u64) -> SimResult<Volume> {
        if clone.parent_volume.is_empty() {
            return Err(OntapError::missing_field("clone.parent_volume"));
        }
        if let (Some(name), Some(puuid)) = (&clone.parent_volume.name, &clone.parent_volume.uuid) {
            if self.volume_in_svm(svm, &Selector { name: Some(name.clone()), uuid: None }).is_some_and(|v| &v.uuid != puuid) {
                return Err(OntapError::new(ErrorKind::Invalid, 918236, "The specified \"parent_volume.uuid\" and \"parent_volume.name\" do not refer to the same volume.").with_target("clone.parent_volume"));
            }
        }
        let parent = self.volume_in_svm(svm, &clone.parent_volume).ok_or_else(|| {
            let name = clone.parent_volume.name.clone().or(clone.parent_volume.uuid.clone()).unwrap_or_default();
            OntapError::new(ErrorKind::NotFound, 524601, format!("Parent volume \"{name}\" not found.")).with_target("clone.parent_volume")
        })?;
        let parent_uuid = parent.uuid.clone();
        let snapshot = if clone.parent_snapshot.is_empty() {
            // ONTAP snapshots the parent itself when no base snapshot is named.
            let name = format!("clone_{}.{}", req.name, now.format("%Y-%m-%d_%H%M%S"));
            let snap_uuid = self.new_uuid();
            self.volume_mut(&parent_uuid)?.create_snapshot(snap_uuid, &name, now)?;
            let s = self.volume(&parent_uuid)?.snapshot_by_name(&name).expect("created");
            Named { uuid: s.uuid.clone(), name: s.name.clone() }
        } else {
            let parent = self.volume(&parent_uuid)?;
            if let (Some(name), Some(suuid)) = (&clone.parent_snapshot.name, &clone.parent_snapshot.uuid) {
                if parent.snapshot_by_name(name).is_some_and(|s| &s.uuid != suuid) {
                    return Err(OntapError::new(ErrorKind::Invalid, 918243, "The specified snapshot UUID is not correct for the specified snapshot name.").with_target("clone.parent_snapshot"));
                }
            }
            parent
                .snapshots
                .iter()
                .find(|s| clone.parent_snapshot.matches(&Named { uuid: s.uuid.clone(), name: s.name.clone() }))
                .map(|s| Named { uuid: s.uuid.clone(), name: s.name.clone() })
                .ok_or_else(|| OntapError::new(ErrorKind::NotFound, 1638600, "The snapshot does not exist.").with_target("clone.parent_snapshot"))?
        };
        let parent = self.volume(&parent_uuid)?;
        let size = req.size.unwrap_or(parent.space().size);
        let (fs, ledger) = parent.clone_source(&snapshot.uuid, size)?;
        let mut volume = Volume::new(uuid.clone(), req.name.clone(), svm.clone(), parent.aggregate.clone(), size, parent.space().snapshot_reserve_percent, now, seq);
        volume.fs = fs;
        volume.ledger = ledger;
        if let Some(percent) = req.reserve_percent {
            volume.ledger.set_reserve_percent(percent);
        }
        volume.vtype = req.vtype.unwrap_or(VolumeType::Rw);
        volume.clone = Some(CloneParent { volume: Named { uuid: parent.uuid.clone(), name: parent.name.clone() }, snapshot: snapshot.clone(), split_initiated: false });
        let parent = self.volume_mut(&parent_uuid)?;
        parent.snapshot_mut(&snapshot.uuid)?.clone_uuids.insert(uuid);
        Ok(volume)
    }

    /// Unsplit FlexClones of a volume.
    pub fn clones_of(&self, uuid: &str) -> Vec<&Volume> {
        self.volumes.values().filter(|v| v.clone.as_ref().is_some_and(|c| c.volume.uuid == uuid)).collect()
    }

    fn release_clone(&mut self, clone_uuid: &str) -> SimResult<()> {
        let Some(parent) = self.volume(clone_uuid)?.clone.clone() else {
            return Ok(());
        };
        if let Ok(volume) = self.volume_mut(&parent.volume.uuid) {
            if let Ok(snapshot) = volume.snapshot_mut(&parent.snapshot.uuid) {
                snapshot.clone_uuids.remove(clone_uuid);
            }
        }
        self.volume_mut(clone_uuid)?.clone = None;
        Ok(())
    }

    pub fn modify_volume(&mut self, uuid: &str, m: VolumeModify) -> SimResult<()> {
        let svm = self.volume(uuid)?.svm.clone();
        if let Some(name) = &m.name {
            validate_volume_name(name)?;
            if self.volume_in_svm(&svm, &Selector { name: Some(name.clone()), uuid: None }).is_some_and(|v| v.uuid != uuid) {
                return Err(OntapError::new(ErrorKind::Duplicate, 917526, "The volume name specified is a duplicate.").with_target("name"));
            }
        }
        if let Some(Some(path)) = &m.junction_path {
            self.check_junction_free(&svm, path, Some(uuid))?;
        }
        if m.reserve_percent.is_some_and(|p| p > 100) {
            return Err(OntapError::invalid_field("space.snapshot.reserve_percent", "The snapshot reserve cannot be more than 100 percent of the volume."));
        }
        if m.split_clone {
            if self.volume(uuid)?.clone.is_none() {
                return Err(OntapError::new(ErrorKind::Refused, 13107349, "Operation is only supported on FlexClone volumes.").with_target("clone.split_initiated"));
            }
            self.release_clone(uuid)?;
        }
        let volume = self.volume_mut(uuid)?;
        if let Some(size) = m.size {
            if size < VOLUME_SIZE_MIN || size / 4096 < volume.ledger.live_blocks() {
                return Err(OntapError::new(ErrorKind::Invalid, 917534, "The value specified for field \"-size\" is too small. Update the field \"-size\" with the minimum size allowed and retry.").with_target("size"));
            }
            volume.ledger.set_size(size);
        }
        if let Some(name) = m.name {
            volume.name = name;
        }
        if let Some(comment) = m.comment {
            volume.comment = Some(comment);
        }
        if let Some(path) = m.junction_path {
            volume.junction_path = path;
        }
        if let Some(percent) = m.reserve_percent {
            volume.ledger.set_reserve_percent(percent);
        }
        if let Some(state) = m.state {
            volume.state = state;
        }
        Ok(())
    }

    pub fn delete_volume(&mut self, uuid: &str) -> SimResult<()> {
        self.volume(uuid)?;
        if !self.clones_of(uuid).is_empty() {
            return Err(OntapError::new(ErrorKind::Refused, 524615, "Failed to delete volume because it has one or more clones."));
        }
        self.release_clone(uuid)?;
        self.volumes.remove(uuid);
        self.prune_cg_snapshots();
        let member_of: Vec<String> = self.cgs.values().filter(|cg| cg.volumes.iter().any(|v| v.uuid == uuid)).map(|cg| cg.uuid.clone()).collect();
        for cg_uuid in member_of {
            if let Some(cg) = self.cgs.get_mut(&cg_uuid) {
                cg.volumes.retain(|v| v.uuid != uuid);
            }
        }
        Ok(())
    }

    pub fn restore_volume(&mut self, uuid: &str, snapshot: &Selector) -> SimResult<()> {
        let volume = self.volume(uuid)?;
        let name = match (&snapshot.name, &snapshot.uuid) {
            (Some(name), _) => name.clone(),
            (None, Some(suuid)) => volume.snapshot_by_uuid(suuid).map(|s| s.name.clone()).ok_or_else(|| {
                OntapError::new(ErrorKind::NotFound, 524511, format!("Failed to restore snapshot \"{suuid}\".")).with_target("restore_to.snapshot.uuid")
            })?,
            (None, None) => return Err(OntapError::missing_field("restore_to.snapshot.name")),
        };
        self.volume_mut(uuid)?.restore(&name)?;
        self.prune_cg_snapshots();
        Ok(())
    }

    pub fn create_snapshot(&mut self, volume_uuid: &str, name: &str, m: SnapshotModify, now: DateTime<Utc>) -> SimResult<String> {
        let uuid = self.new_uuid();
        let volume = self.volume_mut(volume_uuid)?;
        volume.create_snapshot(uuid.clone(), name, now)?;
        let snapshot = volume.snapshot_mut(&uuid)?;
        snapshot.comment = m.comment;
        snapshot.snapmirror_label = m.snapmirror_label;
        snapshot.expiry_time = m.expiry_time;
        Ok(uuid)
    }

    pub fn modify_snapshot(&mut self, volume_uuid: &str, uuid: &str, m: SnapshotModify) -> SimResult<()> {
        let volume = self.volume_mut(volume_uuid)?;
        if let Some(name) = &m.name {
            volume.rename_snapshot(uuid, name)?;
        }
        let snapshot = volume.snapshot_mut(uuid)?;
        if let Some(comment) = m.comment {
            snapshot.comment = Some(comment);
        }
        if let Some(label) = m.snapmirror_label {
            snapshot.snapmirror_label = Some(label);
        }
        if let Some(expiry) = m.expiry_time {
            snapshot.expiry_time = Some(expiry);
        }
        Ok(())
    }

    pub fn delete_snapshot(&mut self, volume_uuid: &str, uuid: &str) -> SimResult<()> {
        self.volume_mut(volume_uuid)?.delete_snapshot(uuid)?;
        self.prune_cg_snapshots();
        Ok(())
    }

    /// A group snapshot lives in its members' snapshots: with some deleted through the volume
    /// API (or by a SnapRestore, or with their volume) it is partial; with none left it is
    /// gone, and its name is free again.
    fn prune_cg_snapshots(&mut self) {
        let exists = |state: &ClusterState, (v, snap): &(String, String)| state.volumes.get(v).is_some_and(|vol| vol.snapshot_by_uuid(snap).is_some());
        let stale: Vec<String> = self.cgs.values().filter(|cg| cg.snapshots.iter().any(|s| !s.members.iter().any(|m| exists(self, m)))).map(|cg| cg.uuid.clone()).collect();
        for cg_uuid in stale {
            let Some(mut cg) = self.cgs.get(&cg_uuid).cloned() else { continue };
            cg.snapshots.retain(|s| s.members.iter().any(|m| exists(self, m)));
            self.cgs.insert(cg_uuid, cg);
        }
    }

    // ---- consistency groups ----

    pub fn cg(&self, uuid: &str) -> SimResult<&ConsistencyGroup> {
        self.cgs.get(uuid).ok_or_else(|| OntapError::new(ErrorKind::NotFound, 53411843, "A consistency group with specified UUID was not found.").with_target("uuid"))
    }

    pub fn create_cg(&mut self, name: &str, svm: &Selector, volumes: &[Selector]) -> SimResult<String> {
        let name_ok = !name.is_empty() && name.len() <= 203 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !name_ok {
            return Err(OntapError::new(ErrorKind::Invalid, 5376461, "The specified name is invalid because it does not match the format requirements.").with_target("name"));
        }
        let svm = self.find_svm(svm)?;
        if self.cgs.values().any(|cg| cg.svm.uuid == svm.uuid && cg.name == name) {
            return Err(OntapError::new(ErrorKind::Duplicate, 1, format!("Duplicate entry: consistency group \"{name}\" already exists in SVM \"{}\".", svm.name)).with_target("name"));
        }
        if volumes.is_empty() {
            return Err(OntapError::missing_field("volumes"));
        }
        let mut members = Vec::new();
        for sel in volumes {
            let volume = self.volume_in_svm(&svm, sel).ok_or_else(|| {
                OntapError::new(ErrorKind::NotFound, 4, format!("entry doesn't exist: volume \"{}\"", sel.name.clone().or(sel.uuid.clone()).unwrap_or_default())).with_target("volumes")
            })?;
            if self.cgs.values().any(|cg| cg.volumes.iter().any(|v| v.uuid == volume.uuid)) {
                return Err(OntapError::new(ErrorKind::Refused, 53411865, format!("Volumes contained in one consistency group cannot be added to a different consistency group: volume \"{}\" is already in one.", volume.name)).with_target("volumes"));
            }
            let named = Named { uuid: volume.uuid.clone(), name: volume.name.clone() };
            if !members.contains(&named) {
                members.push(named);
            }
        }
        let uuid = self.new_uuid();
        let seq = self.next_seq();
        self.cgs.insert(uuid.clone(), ConsistencyGroup { uuid: uuid.clone(), name: name.to_string(), svm, volumes: members, snapshots: Vector::new(), seq });
        Ok(uuid)
    }

    pub fn delete_cg(&mut self, uuid: &str) -> SimResult<()> {
        self.cg(uuid)?;
        // Deleting the group keeps its volumes and their snapshots, as ONTAP does by default.
        self.cgs.remove(uuid);
        Ok(())
    }

    /// One instant across all members: every check passes for every member first, then all
    /// snapshots are taken inside the same state transition.
    pub fn create_cg_snapshot(&mut self, cg_uuid: &str, name: &str, comment: Option<String>, now: DateTime<Utc>) -> SimResult<String> {
        let cg = self.cg(cg_uuid)?.clone();
        if cg.snapshots.iter().any(|s| s.name == name) {
            return Err(OntapError::new(ErrorKind::Duplicate, 525059, "A snapshot with the specified name already exists.").with_target("name"));
        }
        for member in &cg.volumes {
            self.volume(&member.uuid)?.check_snapshot_create(name)?;
        }
        let mut members = Vec::new();
        for member in &cg.volumes {
            let snap_uuid = self.create_snapshot(&member.uuid, name, SnapshotModify { comment: comment.clone(), ..Default::default() }, now)?;
            members.push((member.uuid.clone(), snap_uuid));
        }
        let uuid = self.new_uuid();
        let seq = self.next_seq();
        let cg = self.cgs.get_mut(cg_uuid).expect("checked above");
        cg.snapshots.push_back(CgSnapshot { uuid: uuid.clone(), name: name.to_string(), create_time: now, comment, members, seq });
        Ok(uuid)
    }

    pub fn delete_cg_snapshot(&mut self, cg_uuid: &str, uuid: &str) -> SimResult<()> {
        let cg = self.cg(cg_uuid)?;
        let index = cg.snapshots.iter().position(|s| s.uuid == uuid).ok_or_else(|| OntapError::new(ErrorKind::NotFound, 1638600, "The snapshot does not exist.").with_target("uuid"))?;
        let members = cg.snapshots[index].members.clone();
        for (volume_uuid, snap_uuid) in &members {
            if let Ok(volume) = self.volume(volume_uuid) {
                if volume.snapshot_by_uuid(snap_uuid).is_some() {
                    volume.check_snapshot_delete(snap_uuid)?;
                }
            }
        }
        for (volume_uuid, snap_uuid) in &members {
            if let Ok(volume) = self.volume_mut(volume_uuid) {
                if volume.snapshot_by_uuid(snap_uuid).is_some() {
                    volume.delete_snapshot(snap_uuid)?;
                }
            }
        }
        self.cgs.get_mut(cg_uuid).expect("checked").snapshots.remove(index);
        Ok(())
    }

    /// Restore every member volume to the group snapshot; all or nothing.
    pub fn restore_cg(&mut self, cg_uuid: &str, snapshot: &Selector) -> SimResult<()> {
        let cg = self.cg(cg_uuid)?.clone();
        let cg_snapshot = cg
            .snapshots
            .iter()
            .find(|s| snapshot.matches(&Named { uuid: s.uuid.clone(), name: s.name.clone() }))
            .ok_or_else(|| OntapError::new(ErrorKind::NotFound, 1638600, "The snapshot does not exist.").with_target("restore_to.snapshot"))?;
        for (volume_uuid, snap_uuid) in &cg_snapshot.members {
            let name = self
                .volume(volume_uuid)?
                .snapshot_by_uuid(snap_uuid)
                .map(|s| s.name.clone())
                .ok_or_else(|| OntapError::new(ErrorKind::NotFound, 1638600, "The snapshot does not exist.").with_target("restore_to.snapshot"))?;
            self.volume_mut(volume_uuid)?.restore(&name)?;
        }
        // Newer group snapshots went with their member snapshots.
        let keep_seq = cg_snapshot.seq;
        self.cgs.get_mut(cg_uuid).expect("checked").snapshots.retain(|s| s.seq <= keep_seq);
        Ok(())
    }

    // ---- jobs ----

    pub fn record_job(&mut self, description: String, outcome: Option<&SimResult<()>>, now: DateTime<Utc>) -> String {
        let uuid = self.new_uuid();
        let seq = self.next_seq();
        let (state, message, code) = match outcome {
            None => (JobState::Running, "Running".to_string(), 0),
            Some(Ok(())) => (JobState::Success, "success".to_string(), 0),
            Some(Err(e)) => (JobState::Failure, e.message.clone(), e.code),
        };
        let end_time = state.is_done().then_some(now);
        self.jobs.insert(uuid.clone(), Job { uuid: uuid.clone(), description, state, message, code, start_time: now, end_time, seq });
        if state.is_done() {
            self.finished_jobs.insert(seq, uuid.clone());
        }
        if self.jobs.len() > JOBS_KEPT_MAX {
            if let Some((&oldest_seq, oldest)) = self.finished_jobs.get_min().map(|(k, v)| (k, v.clone())) {
                self.finished_jobs.remove(&oldest_seq);
                self.jobs.remove(&oldest);
            }
        }
        uuid
    }

    pub fn finish_job(&mut self, uuid: &str, outcome: &SimResult<()>, now: DateTime<Utc>) {
        if let Some(job) = self.jobs.get_mut(uuid) {
            match outcome {
                Ok(()) => {
                    job.state = JobState::Success;
                    job.message = "success".into();
                    job.code = 0;
                }
                Err(e) => {
                    job.state = JobState::Failure;
                    job.message = e.message.clone();
                    job.code = e.code;
                }
            }
            job.end_time = Some(now);
            self.finished_jobs.insert(job.seq, uuid.to_string());
        }
    }
}
