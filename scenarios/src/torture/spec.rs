//! What a torture case is: a seeded workload and a sequence of operations, each with at
//! most one injected fault. Generated (and shrunk) by proptest from one seed.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde::{Deserialize, Serialize};

/// The fault kinds the harness injects. Each is something Stasis claims to tolerate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The array answers 500/503 with an ONTAP error.
    Ontap5xx,
    /// The request is accepted (202) and its job fails.
    JobFailure,
    /// The array applies the request but answers after the client's timeout.
    RequestTimeout,
    /// The connection drops without an answer (before or after the request took effect).
    ConnectionReset,
    /// The job runs for a while before it takes effect.
    SlowJob,
    /// The array refuses the credentials (401).
    AuthFailure,
    /// A volume already holds ONTAP's maximum of 1023 snapshots.
    SnapshotLimit,
    /// A FlexClone holds the snapshot retention wants to delete (1638543).
    BusySnapshot,
    /// The database refuses to quiesce (e.g. lock wait timeout).
    QuiesceFailure,
    /// The database never answers the quiesce.
    PluginHang,
    /// The database session holding the freeze is killed.
    SessionKilled,
    /// The orchestrator process dies at a step boundary and restarts.
    OrchestratorCrash,
    /// A catalog write fails (disk full).
    CatalogWriteFailure,
    /// The array deletes the new snapshot before it is verified (e.g. autodelete).
    SnapshotVanished,
}

impl FaultKind {
    pub const ALL: [FaultKind; 14] = [
        FaultKind::Ontap5xx,
        FaultKind::JobFailure,
        FaultKind::RequestTimeout,
        FaultKind::ConnectionReset,
        FaultKind::SlowJob,
        FaultKind::AuthFailure,
        FaultKind::SnapshotLimit,
        FaultKind::BusySnapshot,
        FaultKind::QuiesceFailure,
        FaultKind::PluginHang,
        FaultKind::SessionKilled,
        FaultKind::OrchestratorCrash,
        FaultKind::CatalogWriteFailure,
        FaultKind::SnapshotVanished,
    ];

    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    pub fn parse(name: &str) -> Option<FaultKind> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }
}

/// A fault with the knobs that place it, all drawn from the case's seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// Which request, step or write the fault hits (interpreted per kind).
    pub target: u8,
    /// A second knob: status code, delay, before/after apply.
    pub variant: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The workload commits transactions and the database does background work.
    Work { commits: u8, background_steps: u8 },
    Backup { fault: Option<Fault> },
    /// Restore the n-th (modulo) live backup in place.
    RestoreInPlace { backup: u8, fault: Option<Fault> },
    /// Restore the n-th (modulo) live backup to clones, check, delete the clones.
    RestoreClone { backup: u8, fault: Option<Fault> },
    Retention { keep_last: u8, fault: Option<Fault> },
}

impl Op {
    pub fn fault(&self) -> Option<Fault> {
        match self {
            Op::Work { .. } => None,
            Op::Backup { fault } | Op::RestoreInPlace { fault, .. } | Op::RestoreClone { fault, .. } | Op::Retention { fault, .. } => *fault,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSpec {
    /// Seeds the workload, the database's background work and the simulator's fault draws.
    pub seed: u64,
    /// Data and log on two volumes (needs a consistency-group snapshot) or one.
    pub two_volumes: bool,
    pub ops: Vec<Op>,
    /// Snapshots another tool already keeps on each volume (not Stasis's to delete), so a
    /// case can run close to ONTAP's 1023-snapshot limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub foreign_snapshots: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// Which fault kinds a campaign injects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSet(pub Vec<FaultKind>);

impl FaultSet {
    pub fn all() -> Self {
        FaultSet(FaultKind::ALL.to_vec())
    }
    pub fn none() -> Self {
        FaultSet(Vec::new())
    }
    fn pick(&self, applicable: &[FaultKind]) -> Vec<FaultKind> {
        applicable.iter().copied().filter(|k| self.0.contains(k)).collect()
    }
}

fn fault_strategy(kinds: Vec<FaultKind>) -> BoxedStrategy<Option<Fault>> {
    if kinds.is_empty() {
        return Just(None).boxed();
    }
    let fault = (proptest::sample::select(kinds), any::<u8>(), any::<u8>()).prop_map(|(kind, target, variant)| Fault { kind, target, variant });
    proptest::option::weighted(0.7, fault).boxed()
}

/// The fault kinds an operation can carry (what `World::arm` knows how to place there).
pub const BACKUP_FAULTS: [FaultKind; 13] = [
    FaultKind::Ontap5xx,
    FaultKind::JobFailure,
    FaultKind::RequestTimeout,
    FaultKind::ConnectionReset,
    FaultKind::SlowJob,
    FaultKind::AuthFailure,
    FaultKind::SnapshotLimit,
    FaultKind::QuiesceFailure,
    FaultKind::PluginHang,
    FaultKind::SessionKilled,
    FaultKind::OrchestratorCrash,
    FaultKind::CatalogWriteFailure,
    FaultKind::SnapshotVanished,
];
pub const RESTORE_FAULTS: [FaultKind; 8] = [
    FaultKind::Ontap5xx,
    FaultKind::JobFailure,
    FaultKind::RequestTimeout,
    FaultKind::ConnectionReset,
    FaultKind::SlowJob,
    FaultKind::AuthFailure,
    FaultKind::OrchestratorCrash,
    FaultKind::CatalogWriteFailure,
];
pub const RETENTION_FAULTS: [FaultKind; 7] =
    [FaultKind::Ontap5xx, FaultKind::JobFailure, FaultKind::RequestTimeout, FaultKind::ConnectionReset, FaultKind::BusySnapshot, FaultKind::CatalogWriteFailure, FaultKind::OrchestratorCrash];

fn op_strategy(faults: &FaultSet) -> BoxedStrategy<Op> {
    let backup_kinds = faults.pick(&BACKUP_FAULTS);
    let restore_kinds = faults.pick(&RESTORE_FAULTS);
    let retention_kinds = faults.pick(&RETENTION_FAULTS);
    prop_oneof![
        4 => (1u8..12, 0u8..8).prop_map(|(commits, background_steps)| Op::Work { commits, background_steps }),
        5 => fault_strategy(backup_kinds).prop_map(|fault| Op::Backup { fault }),
        1 => (any::<u8>(), fault_strategy(restore_kinds.clone())).prop_map(|(backup, fault)| Op::RestoreInPlace { backup, fault }),
        1 => (any::<u8>(), fault_strategy(restore_kinds)).prop_map(|(backup, fault)| Op::RestoreClone { backup, fault }),
        2 => (1u8..4, fault_strategy(retention_kinds)).prop_map(|(keep_last, fault)| Op::Retention { keep_last, fault }),
    ]
    .boxed()
}

pub fn case_strategy(faults: &FaultSet) -> BoxedStrategy<CaseSpec> {
    (any::<u64>(), any::<bool>(), proptest::collection::vec(op_strategy(faults), 2..10))
        .prop_map(|(seed, two_volumes, mut ops)| {
            // Every case starts with some load and takes at least one backup.
            ops.insert(0, Op::Work { commits: 8, background_steps: 4 });
            if !ops.iter().any(|op| matches!(op, Op::Backup { .. })) {
                ops.insert(1, Op::Backup { fault: None });
            }
            CaseSpec { seed, two_volumes, ops, foreign_snapshots: 0 }
        })
        .boxed()
}

/// The seed of case `index` of a campaign seeded with `seed`.
pub fn case_seed(campaign_seed: u64, index: u64) -> u64 {
    let mut z = campaign_seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn runner_for(case_seed: u64) -> TestRunner {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&case_seed.to_le_bytes());
    seed[8..16].copy_from_slice(&(!case_seed).to_le_bytes());
    TestRunner::new_with_rng(Config { failure_persistence: None, ..Config::default() }, TestRng::from_seed(RngAlgorithm::ChaCha, &seed))
}

/// The case a seed stands for, and the tree proptest shrinks it along.
pub fn generate(case_seed: u64, faults: &FaultSet) -> Box<dyn ValueTree<Value = CaseSpec>> {
    generate_from(case_seed, &case_strategy(faults))
}

/// The case a seed stands for under another strategy (a scenario file's).
pub fn generate_from(case_seed: u64, strategy: &BoxedStrategy<CaseSpec>) -> Box<dyn ValueTree<Value = CaseSpec>> {
    let mut runner = runner_for(case_seed);
    Box::new(strategy.new_tree(&mut runner).expect("case strategies never reject"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_case() {
        let faults = FaultSet::all();
        assert_eq!(generate(42, &faults).current(), generate(42, &faults).current());
        assert_ne!(generate(42, &faults).current(), generate(43, &faults).current());
    }

    #[test]
    fn no_faults_means_no_faults() {
        for seed in 0..50 {
            assert!(generate(seed, &FaultSet::none()).current().ops.iter().all(|op| op.fault().is_none()));
        }
    }

    #[test]
    fn fault_names_round_trip() {
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::parse(&kind.name()), Some(kind));
        }
    }
}
