//! ONTAP's JSON, as this client reads and writes it. Private to the crate: everything leaves
//! as a `stasis_core::storage` type. Fields are optional where ONTAP may omit them, so an
//! absent field is a decision made in the conversion, not a parse failure.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A collection answer: `{"records": [...], "num_records": N, "_links": {"next": ...}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Collection<T> {
    #[serde(default = "Vec::new")]
    pub records: Vec<T>,
    #[serde(default)]
    pub num_records: Option<u64>,
    #[serde(default, rename = "_links")]
    pub links: Option<Links>,
}

impl<T> Collection<T> {
    pub fn next_href(&self) -> Option<&str> {
        self.links.as_ref()?.next.as_ref().map(|h| h.href.as_str())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Links {
    #[serde(default)]
    pub next: Option<Href>,
    #[serde(default, rename = "self")]
    pub self_: Option<Href>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Href {
    pub href: String,
}

/// `{"name": .., "uuid": ..}` references to other objects (svm, parent volume, CG member).
#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct Reference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// The volume fields the client asks for. Keep in step with [`Volume`].
pub(crate) const VOLUME_FIELDS: &str =
    "uuid,name,svm.name,state,type,space.size,space.used,nas.path,clone.is_flexclone,clone.parent_volume.uuid";

#[derive(Debug, Deserialize)]
pub(crate) struct Volume {
    pub uuid: String,
    pub name: String,
    #[serde(default)]
    pub svm: Option<Reference>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub space: Option<VolumeSpace>,
    #[serde(default)]
    pub nas: Option<VolumeNas>,
    #[serde(default)]
    pub clone: Option<VolumeClone>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct VolumeSpace {
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub used: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct VolumeNas {
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct VolumeClone {
    #[serde(default)]
    pub is_flexclone: Option<bool>,
    #[serde(default)]
    pub parent_volume: Option<Reference>,
}

/// The snapshot fields the client asks for. Keep in step with [`Snapshot`].
pub(crate) const SNAPSHOT_FIELDS: &str = "uuid,name,create_time,owners";

#[derive(Debug, Deserialize)]
pub(crate) struct Snapshot {
    pub uuid: String,
    pub name: String,
    #[serde(default)]
    pub create_time: Option<String>,
    #[serde(default)]
    pub owners: Option<Vec<String>>,
}

pub(crate) const CONSISTENCY_GROUP_FIELDS: &str = "uuid,name,volumes";

#[derive(Debug, Deserialize)]
pub(crate) struct ConsistencyGroup {
    pub uuid: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub volumes: Option<Vec<Reference>>,
}

/// The body of a 202 (and of a 200/201 that finished within `return_timeout`):
/// `{"job": {"uuid": .., "_links": {"self": {"href": "/api/cluster/jobs/<uuid>"}}}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct JobLinkResponse {
    #[serde(default)]
    pub job: Option<JobLink>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct JobLink {
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default, rename = "_links")]
    pub links: Option<Links>,
}

impl JobLink {
    /// The job's uuid, from `uuid` or else from the last segment of its self link.
    pub fn job_uuid(&self) -> Option<String> {
        if let Some(uuid) = self.uuid.as_ref().filter(|u| !u.is_empty()) {
            return Some(uuid.clone());
        }
        let href = &self.links.as_ref()?.self_.as_ref()?.href;
        let last = href.trim_end_matches('/').rsplit('/').next()?;
        (!last.is_empty()).then(|| last.to_string())
    }
}

pub(crate) const JOB_FIELDS: &str = "state,message,code";

#[derive(Debug, Deserialize)]
pub(crate) struct Job {
    /// Exactly ONTAP's five states; anything else fails to parse, as a real client must.
    pub state: JobState,
    #[serde(default)]
    pub message: Option<String>,
    /// An integer in the job schema; tolerated as a string too.
    #[serde(default)]
    pub code: Option<Value>,
    /// Newer releases also report `error.{code,message}` on a failed job.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JobState {
    Queued,
    Running,
    Paused,
    Success,
    Failure,
}

/// `{"error": {"message": .., "code": "<digits>", "target": ..}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    /// A string of digits on the wire; tolerated as a number too.
    #[serde(default)]
    pub code: Option<Value>,
    #[serde(default)]
    pub target: Option<String>,
}

/// ONTAP codes arrive as `"525059"` in error bodies and as `525059` in jobs.
pub(crate) fn parse_code(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// ONTAP writes `2019-03-13T13:05:00-04:00`; some releases drop the colon in the offset.
pub(crate) fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .or_else(|_| DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---- request bodies ----

#[derive(Debug, Serialize)]
pub(crate) struct SnapshotCreate<'a> {
    pub name: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct NameRef<'a> {
    pub name: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct UuidRef<'a> {
    pub uuid: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct VolumeCloneCreate<'a> {
    pub name: &'a str,
    pub svm: NameRef<'a>,
    pub clone: CloneSpec<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nas: Option<NasSpec<'a>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CloneSpec<'a> {
    pub parent_volume: UuidRef<'a>,
    pub parent_snapshot: NameRef<'a>,
    pub is_flexclone: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct NasSpec<'a> {
    pub path: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct CloneSplit {
    pub clone: CloneSplitSpec,
}

#[derive(Debug, Serialize)]
pub(crate) struct CloneSplitSpec {
    pub split_initiated: bool,
}

/// `POST /api/application/consistency-groups` with existing volumes. ONTAP's documented
/// form names each volume with `provisioning_options.action = "add"`; without the action
/// it would try to provision a new volume of that name.
#[derive(Debug, Serialize)]
pub(crate) struct ConsistencyGroupCreate<'a> {
    pub name: &'a str,
    pub svm: NameRef<'a>,
    pub volumes: Vec<CgVolumeAdd<'a>>,
}

/// `PATCH /api/application/consistency-groups/{uuid}` adding existing volumes.
#[derive(Debug, Serialize)]
pub(crate) struct ConsistencyGroupAddVolumes<'a> {
    pub volumes: Vec<CgVolumeAdd<'a>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CgVolumeAdd<'a> {
    pub name: &'a str,
    pub provisioning_options: ProvisioningAction,
}

#[derive(Debug, Serialize)]
pub(crate) struct ProvisioningAction {
    pub action: &'static str,
}

impl<'a> CgVolumeAdd<'a> {
    pub fn existing(name: &'a str) -> Self {
        CgVolumeAdd {
            name,
            provisioning_options: ProvisioningAction { action: "add" },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_from_strings_and_numbers() {
        assert_eq!(parse_code(Some(&Value::from("525059"))), Some(525059));
        assert_eq!(parse_code(Some(&Value::from(524615u64))), Some(524615));
        assert_eq!(parse_code(Some(&Value::from("x"))), None);
        assert_eq!(parse_code(None), None);
    }

    #[test]
    fn times_parse_with_and_without_offset_colon() {
        let a = parse_time("2019-03-13T13:05:00-04:00").unwrap();
        let b = parse_time("2019-03-13T13:05:00-0400").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_rfc3339(), "2019-03-13T17:05:00+00:00");
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn unknown_job_state_is_rejected() {
        let ok: Result<Job, _> = serde_json::from_str(r#"{"state":"running"}"#);
        assert_eq!(ok.unwrap().state, JobState::Running);
        let bad: Result<Job, _> = serde_json::from_str(r#"{"state":"done"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn job_uuid_falls_back_to_the_self_link() {
        let link: JobLinkResponse = serde_json::from_str(
            r#"{"job":{"_links":{"self":{"href":"/api/cluster/jobs/abc-1"}}}}"#,
        )
        .unwrap();
        assert_eq!(link.job.unwrap().job_uuid().as_deref(), Some("abc-1"));
    }

    #[test]
    fn consistency_group_body_adds_existing_volumes() {
        let body = ConsistencyGroupCreate {
            name: "cg1",
            svm: NameRef { name: "svm1" },
            volumes: vec![CgVolumeAdd::existing("v1")],
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"name":"cg1","svm":{"name":"svm1"},
                "volumes":[{"name":"v1","provisioning_options":{"action":"add"}}]})
        );
    }
}
