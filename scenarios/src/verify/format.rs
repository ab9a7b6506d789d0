//! The scenario file: its JSON Schema (`scenarios/scenario.schema.json`, shipped for editors
//! too), the typed form the runner uses, and the checks the schema cannot express. Every
//! error names the file, the line and the field.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use super::yaml::{self, Located, Position};
use crate::torture::spec::{BACKUP_FAULTS, RESTORE_FAULTS, RETENTION_FAULTS};
use crate::torture::FaultKind;
use stasis_core::workflow::Step as WorkflowStep;

pub const SCHEMA: &str = include_str!("../../scenario.schema.json");

/// One problem in a scenario file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {}{message}", .file.display(), .position.line, .position.col, field_prefix(.field))]
pub struct ScenarioError {
    pub file: PathBuf,
    pub position: Position,
    /// The field as a JSON pointer (`/app/volumes/2`); empty for the whole file.
    pub field: String,
    pub message: String,
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{}: ", field_name(field))
    }
}

/// `/schedule/steps/2/restore/mode` -> `schedule.steps[2].restore.mode`.
pub fn field_name(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.chars().all(|c| c.is_ascii_digit()) && !segment.is_empty() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Site {
    pub name: String,
    #[serde(default = "default_svm")]
    pub svm: String,
}

fn default_svm() -> String {
    "svm0".into()
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Simdb,
    Mysql,
    Postgres,
    ExecHooks,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Fail,
    Continue,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Hook {
    pub argv: Vec<String>,
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub on_error: OnError,
}

fn default_hook_timeout_ms() -> u64 {
    10_000
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Hooks {
    #[serde(default)]
    pub pre_snapshot: Vec<Hook>,
    #[serde(default)]
    pub post_snapshot: Vec<Hook>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct App {
    pub name: String,
    pub kind: Kind,
    pub site: Option<String>,
    pub volumes: Vec<String>,
    #[serde(default = "default_freeze_ms")]
    pub freeze_timeout_ms: u64,
    #[serde(default)]
    pub existing_snapshots: u16,
    pub hooks: Option<Hooks>,
}

fn default_freeze_ms() -> u64 {
    300
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    App,
    Crash,
}

/// An inclusive range of small counts: `5` or `[1, 12]`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Range {
    One(u8),
    Between([u8; 2]),
}

impl Range {
    pub fn bounds(self) -> (u8, u8) {
        match self {
            Range::One(n) => (n, n),
            Range::Between([a, b]) => (a.min(b), a.max(b)),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct Workload {
    #[serde(default = "default_commits")]
    pub commits: Range,
    #[serde(default = "default_background")]
    pub background_steps: Range,
}

fn default_commits() -> Range {
    Range::Between([1, 12])
}

fn default_background() -> Range {
    Range::Between([0, 8])
}

impl Default for Workload {
    fn default() -> Self {
        Workload { commits: default_commits(), background_steps: default_background() }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RestoreMode {
    InPlace,
    #[default]
    Clone,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhichBackup {
    #[default]
    Any,
    Oldest,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Work { commits: Option<Range>, background_steps: Option<Range> },
    Backup,
    Restore { mode: RestoreMode, backup: WhichBackup },
    Retention { keep_last: u8 },
    Failover { to: Option<String> },
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Work { .. } => "work",
            Step::Backup => "backup",
            Step::Restore { .. } => "restore",
            Step::Retention { .. } => "retention",
            Step::Failover { .. } => "failover",
        }
    }

    /// The fault kinds the harness can inject into this step.
    pub fn fault_kinds(&self) -> &'static [FaultKind] {
        match self {
            Step::Backup => &BACKUP_FAULTS,
            Step::Restore { .. } => &RESTORE_FAULTS,
            Step::Retention { .. } => &RETENTION_FAULTS,
            Step::Work { .. } | Step::Failover { .. } => &[],
        }
    }

    /// The workflow steps an orchestrator crash can hit in this step.
    pub fn workflow_steps(&self) -> &'static [WorkflowStep] {
        match self {
            Step::Backup => &WorkflowStep::BACKUP,
            Step::Restore { .. } => &WorkflowStep::RESTORE,
            Step::Retention { .. } => &[WorkflowStep::RetentionExpired],
            Step::Work { .. } | Step::Failover { .. } => &[],
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum StepObject {
    Work(Option<WorkStep>),
    /// Its body is checked by the schema (no field yet).
    Backup(serde::de::IgnoredAny),
    Restore(Option<RestoreStep>),
    Retention(Option<RetentionStep>),
    Failover(Option<FailoverStep>),
}

#[derive(Deserialize, Default)]
struct WorkStep {
    commits: Option<Range>,
    background_steps: Option<Range>,
}

#[derive(Deserialize, Default)]
struct RestoreStep {
    #[serde(default)]
    mode: RestoreMode,
    #[serde(default)]
    backup: WhichBackup,
}

#[derive(Deserialize)]
struct RetentionStep {
    keep_last: Option<u8>,
}

#[derive(Deserialize)]
struct FailoverStep {
    to: Option<String>,
}

const KEEP_LAST_DEFAULT: u8 = 2;

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let object = match value {
            Value::String(name) => {
                let mut m = serde_json::Map::new();
                m.insert(name, Value::Null);
                Value::Object(m)
            }
            other => other,
        };
        let step: StepObject = serde_json::from_value(object).map_err(serde::de::Error::custom)?;
        Ok(match step {
            StepObject::Work(w) => {
                let w = w.unwrap_or_default();
                Step::Work { commits: w.commits, background_steps: w.background_steps }
            }
            StepObject::Backup(_) => Step::Backup,
            StepObject::Restore(r) => {
                let r = r.unwrap_or_default();
                Step::Restore { mode: r.mode, backup: r.backup }
            }
            StepObject::Retention(r) => Step::Retention { keep_last: r.and_then(|r| r.keep_last).unwrap_or(KEEP_LAST_DEFAULT) },
            StepObject::Failover(f) => Step::Failover { to: f.and_then(|f| f.to) },
        })
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Schedule {
    #[serde(default = "one")]
    pub repeat: u32,
    pub steps: Vec<Step>,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Faults {
    pub kinds: Vec<FaultKind>,
    #[serde(default = "default_probability")]
    pub probability: f64,
    pub at_steps: Option<Vec<WorkflowStepName>>,
}

fn default_probability() -> f64 {
    0.7
}

/// A workflow step by its snake_case name (`snapshot_taken`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkflowStepName(pub WorkflowStep);

const WORKFLOW_STEPS: [(&str, WorkflowStep); 14] = [
    ("backup_recorded", WorkflowStep::BackupRecorded),
    ("volumes_resolved", WorkflowStep::VolumesResolved),
    ("quiesce_intent_recorded", WorkflowStep::QuiesceIntentRecorded),
    ("quiesced", WorkflowStep::Quiesced),
    ("snapshot_taken", WorkflowStep::SnapshotTaken),
    ("unquiesced", WorkflowStep::Unquiesced),
    ("snapshot_recorded", WorkflowStep::SnapshotRecorded),
    ("backup_completed", WorkflowStep::BackupCompleted),
    ("restore_recorded", WorkflowStep::RestoreRecorded),
    ("app_stopped", WorkflowStep::AppStopped),
    ("storage_restored", WorkflowStep::StorageRestored),
    ("recovered", WorkflowStep::Recovered),
    ("restore_completed", WorkflowStep::RestoreCompleted),
    ("retention_expired", WorkflowStep::RetentionExpired),
];

impl<'de> Deserialize<'de> for WorkflowStepName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        WORKFLOW_STEPS.iter().find(|(n, _)| *n == name).map(|(_, s)| WorkflowStepName(*s)).ok_or_else(|| serde::de::Error::custom(format!("unknown workflow step {name:?}")))
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Violation {
    InconsistentRestores,
    FreezeBoundBreaches,
    Orphans,
    DuplicateSnapshots,
    SecretLeaks,
    Other,
}

impl Violation {
    pub fn name(self) -> &'static str {
        match self {
            Violation::InconsistentRestores => "inconsistent_restores",
            Violation::FreezeBoundBreaches => "freeze_bound_breaches",
            Violation::Orphans => "orphans",
            Violation::DuplicateSnapshots => "duplicate_snapshots",
            Violation::SecretLeaks => "secret_leaks",
            Violation::Other => "other",
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Violations,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Expect {
    pub verdict: Verdict,
    #[serde(default)]
    pub violations: Vec<Violation>,
    pub rpo_max_transactions: Option<u64>,
    #[serde(default)]
    pub faults_hit: Vec<FaultKind>,
    pub backups_complete_min: Option<u64>,
    pub backups_failed_min: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Campaign {
    pub cases: Option<u64>,
    pub seed: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub sites: Vec<Site>,
    pub app: App,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub workload: Workload,
    pub schedule: Schedule,
    pub faults: Option<Faults>,
    pub expect: Expect,
    #[serde(default)]
    pub campaign: Campaign,
    /// Where it was read from (for reports and the reproduce command).
    #[serde(skip)]
    pub path: PathBuf,
}

impl Scenario {
    /// The site the app runs on.
    pub fn app_site(&self) -> Option<&Site> {
        match &self.app.site {
            Some(name) => self.sites.iter().find(|s| &s.name == name),
            None => self.sites.first(),
        }
    }

    /// The schedule as the case runs it (steps repeated).
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        (0..self.schedule.repeat).flat_map(move |_| self.schedule.steps.iter())
    }
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA).expect("the shipped schema is JSON");
        jsonschema::validator_for(&schema).expect("the shipped schema is a valid JSON Schema")
    })
}

/// Where an error is and what it says, taking the most specific error inside an
/// `anyOf`/`oneOf` (the deepest in the document; at equal depth, not a bare type or enum
/// mismatch), so that a misspelt key in a step says so instead of "not valid under any of
/// the schemas". An unexpected key points at the key itself.
fn most_specific(error: &jsonschema::ValidationError<'_>) -> (String, String) {
    use jsonschema::error::ValidationErrorKind as K;
    let mut pointer = error.instance_path().as_str().to_string();
    if let K::AdditionalProperties { unexpected } = error.kind() {
        if let Some(first) = unexpected.first() {
            pointer = format!("{pointer}/{}", first.replace('~', "~0").replace('/', "~1"));
        }
    }
    let here = (pointer, error.to_string());
    let context = match error.kind() {
        K::AnyOf { context } => context,
        K::OneOfNotValid { context } => context,
        _ => return here,
    };
    let rank = |e: &jsonschema::ValidationError<'_>| {
        let depth = e.instance_path().as_str().matches('/').count() + usize::from(matches!(e.kind(), K::AdditionalProperties { .. }));
        let specific = !matches!(e.kind(), K::Type { .. } | K::Enum { .. } | K::Constant { .. });
        (depth, specific)
    };
    match context.iter().flatten().max_by_key(|e| rank(e)) {
        Some(best) if rank(best).0 >= here.0.matches('/').count() => most_specific(best),
        _ => here,
    }
}

/// Load and check one scenario file. All problems found are returned, first to last line.
pub fn load(path: &Path) -> Result<Scenario, Vec<ScenarioError>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![ScenarioError { file: path.into(), position: Position { line: 1, col: 1 }, field: String::new(), message: format!("cannot read the file: {e}") }])?;
    parse(path, &text)
}

/// Check a scenario given as text (`path` only names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<Scenario, Vec<ScenarioError>> {
    let err = |position: Position, field: &str, message: String| ScenarioError { file: path.into(), position, field: field.into(), message };
    let doc = yaml::parse(text).map_err(|e| vec![err(e.position, "", format!("not valid YAML: {}", e.message))])?;
    let mut errors: Vec<ScenarioError> = validator()
        .iter_errors(&doc.value)
        .map(|e| {
            let (pointer, message) = most_specific(&e);
            err(doc.position(&pointer), &pointer, message)
        })
        .collect();
    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.position.line, e.position.col));
        errors.dedup_by(|a, b| a.position == b.position && a.message == b.message);
        return Err(errors);
    }
    let mut scenario: Scenario = serde_json::from_value(doc.value.clone()).map_err(|e| vec![err(Position { line: 1, col: 1 }, "", format!("{e}"))])?;
    scenario.path = path.into();
    if scenario.sites.is_empty() {
        scenario.sites.push(Site { name: "a".into(), svm: default_svm() });
    }
    let errors = check(&scenario, &doc, path);
    if errors.is_empty() {
        Ok(scenario)
    } else {
        Err(errors)
    }
}

/// What the schema cannot say: references between fields, and faults that fit the schedule.
fn check(s: &Scenario, doc: &Located, path: &Path) -> Vec<ScenarioError> {
    let mut errors = Vec::new();
    let mut fail = |pointer: &str, message: String| errors.push(ScenarioError { file: path.into(), position: doc.position(pointer), field: pointer.into(), message });
    let site_names: Vec<&str> = s.sites.iter().map(|x| x.name.as_str()).collect();
    for (i, site) in s.sites.iter().enumerate() {
        if site_names[..i].contains(&site.name.as_str()) {
            fail(&format!("/sites/{i}/name"), format!("site {:?} is named twice", site.name));
        }
    }
    if let Some(site) = &s.app.site {
        if !site_names.contains(&site.as_str()) {
            fail("/app/site", format!("no site is named {site:?} (sites: {})", site_names.join(", ")));
        }
    }
    if s.app.kind == Kind::Simdb && s.app.volumes.len() > 2 {
        fail("/app/volumes", format!("the simulated database uses one volume (pages and log) or two (pages, log), not {}", s.app.volumes.len()));
    }
    match (&s.app.hooks, s.app.kind) {
        (Some(_), Kind::ExecHooks) | (None, Kind::Simdb | Kind::Mysql | Kind::Postgres) => {}
        (None, Kind::ExecHooks) => fail("/app", "kind exec-hooks needs hooks (pre_snapshot and/or post_snapshot)".into()),
        (Some(_), _) => fail("/app/hooks", "hooks are for kind exec-hooks; mysql, postgres and simdb are quiesced by their plugins".into()),
    }
    if let Some(hooks) = &s.app.hooks {
        if hooks.pre_snapshot.is_empty() && hooks.post_snapshot.is_empty() {
            fail("/app/hooks", "no hook given: add pre_snapshot and/or post_snapshot commands".into());
        }
        for (phase, list) in [("pre_snapshot", &hooks.pre_snapshot), ("post_snapshot", &hooks.post_snapshot)] {
            for (i, hook) in list.iter().enumerate() {
                if hook.argv[0].is_empty() {
                    fail(&format!("/app/hooks/{phase}/{i}/argv/0"), "the program name is empty".into());
                }
            }
        }
    }
    for (field, range) in [("/workload/commits", s.workload.commits), ("/workload/background_steps", s.workload.background_steps)] {
        if let Range::Between([a, b]) = range {
            if a > b {
                fail(field, format!("the range [{a}, {b}] is empty: write [low, high]"));
            }
        }
    }
    if !s.schedule.steps.iter().any(|st| matches!(st, Step::Backup)) {
        fail("/schedule/steps", "the schedule takes no backup: add a `backup` step".into());
    }
    for (i, step) in s.schedule.steps.iter().enumerate() {
        if let Step::Failover { to } = step {
            let app_site = s.app_site().map(|x| x.name.as_str());
            let target = to.as_deref().or_else(|| site_names.iter().copied().find(|n| Some(*n) != app_site));
            match target {
                None => fail(&format!("/schedule/steps/{i}"), "a failover needs a second site: add it under `sites`".into()),
                Some(t) if !site_names.contains(&t) => fail(&format!("/schedule/steps/{i}/failover/to"), format!("no site is named {t:?} (sites: {})", site_names.join(", "))),
                Some(t) if Some(t) == app_site => fail(&format!("/schedule/steps/{i}/failover/to"), format!("the app already runs on site {t:?}")),
                Some(_) => {}
            }
        }
        if let Step::Work { commits: Some(Range::Between([a, b])), .. } | Step::Work { background_steps: Some(Range::Between([a, b])), .. } = step {
            if a > b {
                fail(&format!("/schedule/steps/{i}"), format!("the range [{a}, {b}] is empty: write [low, high]"));
            }
        }
    }
    if let Some(faults) = &s.faults {
        for (i, kind) in faults.kinds.iter().enumerate() {
            if !s.schedule.steps.iter().any(|st| st.fault_kinds().contains(kind)) {
                let fits: Vec<&str> = ["backup", "restore", "retention"]
                    .into_iter()
                    .filter(|name| match *name {
                        "backup" => BACKUP_FAULTS.contains(kind),
                        "restore" => RESTORE_FAULTS.contains(kind),
                        _ => RETENTION_FAULTS.contains(kind),
                    })
                    .collect();
                fail(&format!("/faults/kinds/{i}"), format!("fault {} can hit no step of this schedule (it applies to: {})", kind.name(), fits.join(", ")));
            }
        }
        if let Some(at) = &faults.at_steps {
            if !faults.kinds.contains(&FaultKind::OrchestratorCrash) {
                fail("/faults/at_steps", "at_steps places orchestrator_crash, which is not among the fault kinds".into());
            }
            for (i, name) in at.iter().enumerate() {
                if !s.schedule.steps.iter().any(|st| st.workflow_steps().contains(&name.0)) {
                    fail(&format!("/faults/at_steps/{i}"), format!("no step of this schedule passes {:?}", name.0));
                }
            }
        }
    }
    let e = &s.expect;
    match e.verdict {
        Verdict::Violations if e.violations.is_empty() => fail("/expect", "verdict `violations` (a negative control) must list which violations it has to find".into()),
        Verdict::Pass if !e.violations.is_empty() => fail("/expect/violations", "verdict `pass` allows no violation: remove this list, or expect `violations`".into()),
        _ => {}
    }
    for (i, kind) in e.faults_hit.iter().enumerate() {
        if !s.faults.as_ref().is_some_and(|f| f.kinds.contains(kind)) {
            fail(&format!("/expect/faults_hit/{i}"), format!("fault {} is not injected (add it to faults.kinds)", kind.name()));
        }
    }
    errors.sort_by_key(|e| (e.position.line, e.position.col));
    errors
}
