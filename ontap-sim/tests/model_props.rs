//! Property test of the copy-on-write volume model against a naive reference model.
//!
//! The reference keeps every file as a `Vec<u8>` and every snapshot as a full copy. Random
//! sequences of writes, truncates, unlinks, snapshots, snapshot deletes, SnapRestores,
//! FlexClones, clone splits and clone deletes run against both; after every step the content
//! of every volume, snapshot and clone must match, both must agree on which operations ONTAP
//! refuses, and the incremental space ledger must equal a brute-force count of distinct
//! blocks.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::SystemTime;

use chrono::Utc;
use ontap_sim::model::cluster::{ClusterConfig, ClusterState, CloneRequest, Selector, SnapshotModify, VolumeCreate, VolumeModify};
use ontap_sim::model::fs::{Fs, BLOCK_SIZE};
use ontap_sim::model::volume::{list_dir, read_file};
use proptest::prelude::*;

type Files = BTreeMap<String, Vec<u8>>;

#[derive(Clone, Debug)]
struct RefVolume {
    uuid: String,
    files: Files,
    /// (name, files, clones made from it)
    snapshots: Vec<(String, Files, BTreeSet<String>)>,
    /// (parent volume uuid, snapshot name) while unsplit.
    parent: Option<(String, String)>,
}

#[derive(Clone, Debug)]
enum Op {
    Write { vol: usize, file: usize, offset: u64, len: usize, byte: u8 },
    Truncate { vol: usize, file: usize, size: u64 },
    Unlink { vol: usize, file: usize },
    Snapshot { vol: usize },
    DeleteSnapshot { vol: usize, snap: usize },
    Restore { vol: usize, snap: usize },
    Clone { vol: usize, snap: usize },
    Split { vol: usize },
    DeleteVolume { vol: usize },
}

const FILES: [&str; 3] = ["a", "b", "dir/c"];

fn op_strategy() -> impl Strategy<Value = Op> {
    let vol = 0usize..4;
    prop_oneof![
        6 => (vol.clone(), 0usize..3, 0u64..(6 * BLOCK_SIZE as u64), 1usize..(2 * BLOCK_SIZE + 10), any::<u8>())
            .prop_map(|(vol, file, offset, len, byte)| Op::Write { vol, file, offset, len, byte }),
        2 => (vol.clone(), 0usize..3, 0u64..(5 * BLOCK_SIZE as u64)).prop_map(|(vol, file, size)| Op::Truncate { vol, file, size }),
        1 => (vol.clone(), 0usize..3).prop_map(|(vol, file)| Op::Unlink { vol, file }),
        3 => vol.clone().prop_map(|vol| Op::Snapshot { vol }),
        2 => (vol.clone(), 0usize..4).prop_map(|(vol, snap)| Op::DeleteSnapshot { vol, snap }),
        2 => (vol.clone(), 0usize..4).prop_map(|(vol, snap)| Op::Restore { vol, snap }),
        1 => (vol.clone(), 0usize..4).prop_map(|(vol, snap)| Op::Clone { vol, snap }),
        1 => vol.clone().prop_map(|vol| Op::Split { vol }),
        1 => vol.prop_map(|vol| Op::DeleteVolume { vol }),
    ]
}

fn svm() -> Selector {
    Selector { name: Some("svm0".into()), uuid: None }
}

fn now() -> SystemTime {
    SystemTime::now()
}

struct World {
    cluster: ClusterState,
    refs: Vec<RefVolume>,
    n_snapshots: usize,
    n_volumes: usize,
}

impl World {
    fn new() -> Self {
        let mut cluster = ClusterState::new(&ClusterConfig::default());
        let uuid = cluster
            .create_volume(
                VolumeCreate { name: "v0".into(), svm: svm(), aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }], size: Some(1 << 30), ..Default::default() },
                Utc::now(),
            )
            .unwrap();
        World { cluster, refs: vec![RefVolume { uuid, files: Files::new(), snapshots: Vec::new(), parent: None }], n_snapshots: 0, n_volumes: 1 }
    }

    fn pick(&self, vol: usize) -> usize {
        vol % self.refs.len()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write { vol, file, offset, len, byte } => {
                let v = self.pick(vol);
                let path = FILES[file];
                let data = vec![byte; len];
                let uuid = self.refs[v].uuid.clone();
                self.cluster.volume_mut(&uuid).unwrap().write_file(path, offset, &data, now()).unwrap();
                let content = self.refs[v].files.entry(path.to_string()).or_default();
                let end = offset as usize + len;
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[offset as usize..end].copy_from_slice(&data);
            }
            Op::Truncate { vol, file, size } => {
                let v = self.pick(vol);
                let path = FILES[file];
                let uuid = self.refs[v].uuid.clone();
                let result = self.cluster.volume_mut(&uuid).unwrap().truncate_file(path, size, now());
                match self.refs[v].files.get_mut(path) {
                    Some(content) => {
                        result.unwrap();
                        content.resize(size as usize, 0);
                    }
                    None => assert!(result.is_err(), "truncate of a missing file must fail"),
                }
            }
            Op::Unlink { vol, file } => {
                let v = self.pick(vol);
                let path = FILES[file];
                let uuid = self.refs[v].uuid.clone();
                let result = self.cluster.volume_mut(&uuid).unwrap().remove_file(path, now());
                assert_eq!(result.is_ok(), self.refs[v].files.remove(path).is_some());
            }
            Op::Snapshot { vol } => {
                let v = self.pick(vol);
                self.n_snapshots += 1;
                let name = format!("s{}", self.n_snapshots);
                let uuid = self.refs[v].uuid.clone();
                self.cluster.create_snapshot(&uuid, &name, SnapshotModify::default(), Utc::now()).unwrap();
                let files = self.refs[v].files.clone();
                self.refs[v].snapshots.push((name, files, BTreeSet::new()));
            }
            Op::DeleteSnapshot { vol, snap } => {
                let v = self.pick(vol);
                if self.refs[v].snapshots.is_empty() {
                    return;
                }
                let s = snap % self.refs[v].snapshots.len();
                let (name, _, clones) = self.refs[v].snapshots[s].clone();
                let uuid = self.refs[v].uuid.clone();
                let snap_uuid = self.cluster.volume(&uuid).unwrap().snapshot_by_name(&name).unwrap().uuid.clone();
                let result = self.cluster.delete_snapshot(&uuid, &snap_uuid);
                if clones.is_empty() {
                    result.unwrap();
                    self.refs[v].snapshots.remove(s);
                } else {
                    assert_eq!(result.unwrap_err().code, 1638543, "a snapshot with a clone has an owner");
                }
            }
            Op::Restore { vol, snap } => {
                let v = self.pick(vol);
                if self.refs[v].snapshots.is_empty() {
                    return;
                }
                let s = snap % self.refs[v].snapshots.len();
                let name = self.refs[v].snapshots[s].0.clone();
                let uuid = self.refs[v].uuid.clone();
                let result = self.cluster.restore_volume(&uuid, &Selector { name: Some(name), uuid: None });
                let newer_busy = self.refs[v].snapshots[s + 1..].iter().any(|(_, _, clones)| !clones.is_empty());
                if newer_busy {
                    assert_eq!(result.unwrap_err().code, 1638480);
                } else {
                    result.unwrap();
                    self.refs[v].snapshots.truncate(s + 1);
                    self.refs[v].files = self.refs[v].snapshots[s].1.clone();
                }
            }
            Op::Clone { vol, snap } => {
                let v = self.pick(vol);
                if self.refs[v].snapshots.is_empty() || self.refs.len() >= 6 {
                    return;
                }
                let s = snap % self.refs[v].snapshots.len();
                let snap_name = self.refs[v].snapshots[s].0.clone();
                self.n_volumes += 1;
                let clone_name = format!("v{}", self.n_volumes);
                let parent_uuid = self.refs[v].uuid.clone();
                let uuid = self
                    .cluster
                    .create_volume(
                        VolumeCreate {
                            name: clone_name,
                            svm: svm(),
                            clone: Some(CloneRequest {
                                parent_volume: Selector { name: None, uuid: Some(parent_uuid.clone()) },
                                parent_snapshot: Selector { name: Some(snap_name.clone()), uuid: None },
                            }),
                            ..Default::default()
                        },
                        Utc::now(),
                    )
                    .unwrap();
                self.refs[v].snapshots[s].2.insert(uuid.clone());
                let files = self.refs[v].snapshots[s].1.clone();
                self.refs.push(RefVolume { uuid, files, snapshots: Vec::new(), parent: Some((parent_uuid, snap_name)) });
            }
            Op::Split { vol } => {
                let v = self.pick(vol);
                let uuid = self.refs[v].uuid.clone();
                let result = self.cluster.modify_volume(&uuid, VolumeModify { split_clone: true, ..Default::default() });
                match self.refs[v].parent.take() {
                    Some((parent, snap)) => {
                        result.unwrap();
                        self.release(&parent, &snap, &uuid);
                    }
                    None => assert!(result.is_err(), "splitting a volume that is no clone must fail"),
                }
            }
            Op::DeleteVolume { vol } => {
                let v = self.pick(vol);
                if v == 0 {
                    return; // keep one volume to work on
                }
                let uuid = self.refs[v].uuid.clone();
                let has_clones = self.refs.iter().any(|r| r.parent.as_ref().is_some_and(|(p, _)| *p == uuid));
                let result = self.cluster.delete_volume(&uuid);
                if has_clones {
                    assert_eq!(result.unwrap_err().code, 524615);
                } else {
                    result.unwrap();
                    let removed = self.refs.remove(v);
                    if let Some((parent, snap)) = removed.parent {
                        self.release(&parent, &snap, &uuid);
                    }
                }
            }
        }
    }

    fn release(&mut self, parent: &str, snap: &str, clone: &str) {
        let p = self.refs.iter_mut().find(|r| r.uuid == parent).unwrap();
        p.snapshots.iter_mut().find(|(n, _, _)| n == snap).unwrap().2.remove(clone);
    }

    fn check(&self) {
        assert_eq!(self.cluster.volumes.len(), self.refs.len());
        for r in &self.refs {
            let volume = self.cluster.volume(&r.uuid).unwrap();
            assert_files(&volume.fs, &r.files, &format!("{} active", volume.name));
            assert_eq!(volume.snapshots.len(), r.snapshots.len());
            for (snapshot, (name, files, clones)) in volume.snapshots.iter().zip(&r.snapshots) {
                assert_eq!(&snapshot.name, name);
                assert_files(&snapshot.fs, files, &format!("{} snapshot {name}", volume.name));
                assert_eq!(snapshot.owners().is_empty(), clones.is_empty());
            }
            // Space: the ledger must equal a brute-force count of distinct blocks.
            let ids = |fs: &Fs| fs.blocks().map(|(_, _, b)| b.id).collect::<HashSet<u64>>();
            let active = ids(&volume.fs);
            let per_snapshot: Vec<HashSet<u64>> = volume.snapshots.iter().map(|s| ids(&s.fs)).collect();
            let in_snapshots: HashSet<u64> = per_snapshot.iter().flatten().copied().filter(|id| !active.contains(id)).collect();
            let space = volume.space();
            assert_eq!(space.used, active.len() as u64 * BLOCK_SIZE as u64, "{} used", volume.name);
            assert_eq!(space.snapshot_used, in_snapshots.len() as u64 * BLOCK_SIZE as u64, "{} snapshot used", volume.name);
            for (i, snapshot) in volume.snapshots.iter().enumerate() {
                let exclusive = per_snapshot[i]
                    .iter()
                    .filter(|id| !active.contains(id) && per_snapshot.iter().enumerate().all(|(j, other)| j == i || !other.contains(id)))
                    .count();
                assert_eq!(volume.snapshot_size(snapshot), exclusive as u64 * BLOCK_SIZE as u64, "{} exclusive size of {}", volume.name, snapshot.name);
            }
            assert_eq!(space.available + space.used + space.snapshot_used.max(space.snapshot_reserve_size), space.size);
        }
    }
}

fn collect(fs: &Fs, dir: &str, out: &mut Files) {
    for (name, kind, _) in list_dir(fs, dir).unwrap() {
        let path = if dir.is_empty() { name } else { format!("{dir}/{name}") };
        match kind {
            ontap_sim::model::fs::FileType::Dir => collect(fs, &path, out),
            _ => {
                out.insert(path.clone(), read_file(fs, &path, 0, None).unwrap());
            }
        }
    }
}

fn assert_files(fs: &Fs, expected: &Files, what: &str) {
    let mut actual = Files::new();
    collect(fs, "", &mut actual);
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{what}: file names");
    for (path, content) in expected {
        assert!(actual[path] == *content, "{what}: content of {path} differs (len {} vs {})", actual[path].len(), content.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn volume_model_matches_reference(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op);
            world.check();
        }
    }
}

/// A hand-written sequence that the random search could miss: a restore resurrects blocks a
/// snapshot held, and the ledger must count them live again.
#[test]
fn restore_resurrects_snapshot_blocks() {
    let mut world = World::new();
    for op in [
        Op::Write { vol: 0, file: 0, offset: 0, len: 3 * BLOCK_SIZE, byte: 1 },
        Op::Snapshot { vol: 0 },
        Op::Write { vol: 0, file: 0, offset: 0, len: 2 * BLOCK_SIZE, byte: 2 },
        Op::Snapshot { vol: 0 },
        Op::Write { vol: 0, file: 0, offset: BLOCK_SIZE as u64, len: 2 * BLOCK_SIZE, byte: 3 },
        Op::Restore { vol: 0, snap: 0 },
        Op::Write { vol: 0, file: 0, offset: 0, len: 1, byte: 4 },
        Op::Snapshot { vol: 0 },
        Op::Unlink { vol: 0, file: 0 },
    ] {
        world.apply(&op);
        world.check();
    }
    let volume = world.cluster.volume(&world.refs[0].uuid).unwrap();
    assert_eq!(volume.snapshots.len(), 2);
    assert_eq!(volume.space().used, 0);
    assert_eq!(volume.space().snapshot_used, 4 * BLOCK_SIZE as u64);
}
