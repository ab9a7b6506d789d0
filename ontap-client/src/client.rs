//! `OntapClient`: the `Storage` seam over ONTAP REST.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Method;
use stasis_core::storage::{
    codes, ConsistencyGroupInfo, SnapshotInfo, Storage, StorageError, StorageResult, VolumeInfo,
};
use tracing::{info, warn};

use crate::config::{ConfigError, OntapConfig, TlsTrust};
use crate::http::{refused_locally, Bounds, Transport, Written};
use crate::wire;

/// ONTAP caps `return_timeout` at 120 seconds.
const RETURN_TIMEOUT_SECS_MAX: u64 = 120;

/// ONTAP's generic "duplicate entry" code.
const CODE_DUPLICATE: u64 = 1;
/// Consistency-group create: "An object with the same identifier in the same scope exists."
const CODE_CG_DUPLICATE: u64 = 53_411_860;
/// Consistency-group modify: "A consistency group with the same identifier in the same scope exists."
const CODE_CG_DUPLICATE_MODIFY: u64 = 53_411_852;
/// Snapshot delete: "The snapshot does not exist."
const CODE_SNAPSHOT_DOES_NOT_EXIST: u64 = 1_638_600;

/// The ONTAP REST client. Cheap to share (`Arc<OntapClient>`); one connection pool inside.
pub struct OntapClient {
    transport: Transport,
    tls: TlsTrust,
    username: String,
    /// Members of the consistency groups this client ensured, so that reading back a CG
    /// snapshot inside a freeze costs no extra round trip.
    cg_members: Mutex<HashMap<String, Vec<String>>>,
}

impl std::fmt::Debug for OntapClient {
    // Written by hand so that nothing secret can ever be added to it by accident.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OntapClient")
            .field("base_url", &self.transport.base().as_str())
            .field("username", &self.username)
            .field("tls", &self.tls)
            .field("bounds", &self.transport.bounds)
            .finish_non_exhaustive()
    }
}

/// What to do when a create answers 202 (its job still running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnAccepted {
    /// The call had a deadline and `return_timeout` covered it: the outcome is unknown.
    Indeterminate,
    /// Await the job within `job_wait_max`.
    AwaitJob,
}

/// Why a create looks its object up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Reading back what the array just said it created.
    ReadBack,
    /// An earlier attempt may have landed: only an object that is certainly ours is adopted.
    Adopt,
}

impl OntapClient {
    pub fn new(config: OntapConfig) -> Result<Self, ConfigError> {
        let base = config.validate()?;
        let builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(8)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            // ONTAP does not redirect API calls; following one could replay a write.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stasis-ontap-client/", env!("CARGO_PKG_VERSION")));
        let builder = crate::tls::apply(builder, &config.tls)?;
        let http = builder
            .build()
            .map_err(|source| ConfigError::Http { source })?;
        let bounds = Bounds {
            request_timeout: config.request_timeout,
            retry_attempts_max: config.retry_attempts_max,
            retry_backoff_base: config.retry_backoff_base,
            retry_backoff_max: config.retry_backoff_max,
            job_poll_interval: config.job_poll_interval,
            job_poll_interval_max: config.job_poll_interval_max,
            job_wait_max: config.job_wait_max,
        };
        Ok(OntapClient {
            transport: Transport::new(http, base, config.username.clone(), config.password, bounds),
            tls: config.tls,
            username: config.username,
            cg_members: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn t(&self) -> &Transport {
        &self.transport
    }

    // ---------------------------------------------------------------- reads

    #[tracing::instrument(skip(self))]
    pub async fn warm_up(&self) -> StorageResult<()> {
        let url = self.t().url(&["cluster"], &[("fields", "version")]);
        let cluster: serde_json::Value = self.t().get_json(url, None).await?;
        let version = cluster
            .pointer("/version/full")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown");
        tracing::debug!(version, "connection to the array is warm");
        Ok(())
    }

    #[tracing::instrument(skip(self, names), fields(n_names = names.len()))]
    pub async fn volumes_by_name(
        &self,
        svm: &str,
        names: &[String],
    ) -> StorageResult<Vec<VolumeInfo>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // One query for all names (`name=a|b`); the answer is matched exactly, so a name
        // holding a query operator can only fail to match, never match something else.
        let joined = names.join("|");
        let url = self.t().url(
            &["storage", "volumes"],
            &[
                ("svm.name", svm),
                ("name", &joined),
                ("fields", wire::VOLUME_FIELDS),
            ],
        );
        let records: Vec<wire::Volume> = self.t().get_collection(url, None).await?;
        let mut by_name: HashMap<String, wire::Volume> = records
            .into_iter()
            .filter(|v| {
                v.svm
                    .as_ref()
                    .and_then(|s| s.name.as_deref())
                    .is_none_or(|s| s == svm)
            })
            .map(|v| (v.name.clone(), v))
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Some(volume) = by_name.remove(name) else {
                if let Some(done) = out.iter().find(|v: &&VolumeInfo| &v.name == name) {
                    out.push(done.clone());
                    continue;
                }
                return Err(StorageError::NotFound {
                    what: format!("volume {name} in SVM {svm}"),
                });
            };
            out.push(self.volume_info(volume, svm).await?);
        }
        Ok(out)
    }

    /// Volumes mounted at `junction_path` in any SVM. ONTAP's query language would read
    /// `*`, `|` or a leading `!` in the path as operators, so the answer is matched exactly.
    #[tracing::instrument(skip(self))]
    pub async fn volumes_by_junction_path(&self, junction_path: &str) -> StorageResult<Vec<VolumeInfo>> {
        let url = self.t().url(
            &["storage", "volumes"],
            &[("nas.path", junction_path), ("fields", wire::VOLUME_FIELDS)],
        );
        let records: Vec<wire::Volume> = self.t().get_collection(url, None).await?;
        let mut out = Vec::new();
        for v in records {
            if v.nas.as_ref().and_then(|n| n.path.as_deref()) == Some(junction_path) {
                out.push(self.volume_info(v, "").await?);
            }
        }
        Ok(out)
    }

    #[tracing::instrument(skip(self))]
    pub async fn volume(&self, uuid: &str) -> StorageResult<VolumeInfo> {
        let url = self.t().url(
            &["storage", "volumes", uuid],
            &[("fields", wire::VOLUME_FIELDS)],
        );
        let volume: wire::Volume = self
            .t()
            .get_json(url, None)
            .await
            .map_err(|e| name_not_found(e, format!("volume {uuid}")))?;
        self.volume_info(volume, "").await
    }

    pub(crate) async fn volume_info(
        &self,
        volume: wire::Volume,
        svm_asked: &str,
    ) -> StorageResult<VolumeInfo> {
        let count_url = self.t().url(
            &["storage", "volumes", &volume.uuid, "snapshots"],
            &[("return_records", "false")],
        );
        let n_snapshots = self.t().count_collection(count_url).await?;
        let svm = volume
            .svm
            .as_ref()
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| svm_asked.to_string());
        let clone_parent_uuid = match &volume.clone {
            Some(clone) if clone.is_flexclone == Some(true) => {
                clone.parent_volume.as_ref().and_then(|p| p.uuid.clone())
            }
            _ => None,
        };
        Ok(VolumeInfo {
            uuid: volume.uuid,
            name: volume.name,
            svm,
            online: volume.state.as_deref() == Some("online"),
            // `rw` is ONTAP's default type; `dp` (SnapMirror destination) and `ls` are read-only.
            writable: volume
                .kind
                .as_deref()
                .is_none_or(|k| k.eq_ignore_ascii_case("rw")),
            n_snapshots: u32::try_from(n_snapshots).unwrap_or(u32::MAX),
            size_bytes: volume.space.as_ref().and_then(|s| s.size).unwrap_or(0),
            used_bytes: volume.space.as_ref().and_then(|s| s.used).unwrap_or(0),
            junction_path: volume.nas.and_then(|n| n.path).filter(|p| !p.is_empty()),
            clone_parent_uuid,
        })
    }

    #[tracing::instrument(skip(self))]
    pub async fn snapshots(&self, volume_uuid: &str) -> StorageResult<Vec<SnapshotInfo>> {
        let url = self.t().url(
            &["storage", "volumes", volume_uuid, "snapshots"],
            &[("fields", wire::SNAPSHOT_FIELDS)],
        );
        let records: Vec<wire::Snapshot> = self
            .t()
            .get_collection(url, None)
            .await
            .map_err(|e| name_not_found(e, format!("volume {volume_uuid}")))?;
        let mut out = records
            .into_iter()
            .map(|s| snapshot_info(s, volume_uuid))
            .collect::<StorageResult<Vec<_>>>()?;
        // Oldest first. Create times are whole seconds: ties keep the array's order (ONTAP
        // lists snapshots in creation order), never the names' (a DR failback picks the
        // newest common snapshot from this order).
        out.sort_by_key(|a| a.create_time);
        Ok(out)
    }

    #[tracing::instrument(skip(self))]
    pub async fn snapshot_by_name(
        &self,
        volume_uuid: &str,
        name: &str,
    ) -> StorageResult<Option<SnapshotInfo>> {
        self.find_snapshot(volume_uuid, name, None).await
    }

    async fn find_snapshot(
        &self,
        volume_uuid: &str,
        name: &str,
        deadline: Option<Instant>,
    ) -> StorageResult<Option<SnapshotInfo>> {
        let url = self.t().url(
            &["storage", "volumes", volume_uuid, "snapshots"],
            &[("name", name), ("fields", wire::SNAPSHOT_FIELDS)],
        );
        let records: Vec<wire::Snapshot> = self
            .t()
            .get_collection(url, deadline)
            .await
            .map_err(|e| name_not_found(e, format!("volume {volume_uuid}")))?;
        records
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| snapshot_info(s, volume_uuid))
            .transpose()
    }

    // ---------------------------------------------------------------- snapshots

    /// One POST with `return_timeout`, on the warm connection; never blindly re-POSTed.
    #[tracing::instrument(skip(self), fields(deadline_ms = deadline.as_millis() as u64))]
    pub async fn create_snapshot(
        &self,
        volume_uuid: &str,
        name: &str,
        deadline: Duration,
    ) -> StorageResult<SnapshotInfo> {
        self.post_snapshot(volume_uuid, name, deadline, true)
            .await?
            .ok_or_else(|| StorageError::Indeterminate {
                message: format!("snapshot {name} of volume {volume_uuid}: created but not read back"),
            })
    }

    /// As [`OntapClient::create_snapshot`], without reading the snapshot back once the array
    /// reports it taken: inside a freeze every round trip counts, and the caller reads it
    /// back after the thaw. (A retry after an unknown outcome still looks it up by name.)
    pub async fn take_snapshot(&self, volume_uuid: &str, name: &str, deadline: Duration) -> StorageResult<()> {
        self.post_snapshot(volume_uuid, name, deadline, false).await.map(|_| ())
    }

    async fn post_snapshot(
        &self,
        volume_uuid: &str,
        name: &str,
        deadline: Duration,
        read_back: bool,
    ) -> StorageResult<Option<SnapshotInfo>> {
        let deadline_at = Instant::now() + deadline;
        let body = wire::SnapshotCreate { name };
        let post = |timeout: Duration| {
            let return_timeout = return_timeout_secs(timeout).to_string();
            let url = self.t().url(
                &["storage", "volumes", volume_uuid, "snapshots"],
                &[("return_timeout", &return_timeout)],
            );
            self.t().write_once(Method::POST, url, &body, timeout)
        };
        let lookup = |kind: Lookup| async move {
            match (kind, read_back) {
                (Lookup::ReadBack, false) => Ok(Some(None)),
                _ => self.find_snapshot(volume_uuid, name, Some(deadline_at)).await.map(|found| found.map(Some)),
            }
        };
        let what = format!("snapshot {name} of volume {volume_uuid}");
        let snapshot = self
            .create_adopting(
                &what,
                Some(deadline_at),
                OnAccepted::Indeterminate,
                &[codes::DUPLICATE_SNAPSHOT_NAME],
                post,
                lookup,
            )
            .await?;
        match &snapshot {
            Some(s) => info!(snapshot = name, uuid = %s.uuid, create_time = %s.create_time, "snapshot created"),
            None => info!(snapshot = name, "snapshot taken"),
        }
        Ok(snapshot)
    }

    #[tracing::instrument(skip(self))]
    pub async fn delete_snapshot(
        &self,
        volume_uuid: &str,
        snapshot_uuid: &str,
    ) -> StorageResult<()> {
        let url = self.t().url(
            &[
                "storage",
                "volumes",
                volume_uuid,
                "snapshots",
                snapshot_uuid,
            ],
            &[],
        );
        self.delete_idempotent(url, &[CODE_SNAPSHOT_DOES_NOT_EXIST])
            .await
    }

    // ---------------------------------------------------------------- consistency groups

    #[tracing::instrument(skip(self, volume_uuids), fields(n_volumes = volume_uuids.len()))]
    pub async fn ensure_consistency_group(
        &self,
        svm: &str,
        name: &str,
        volume_uuids: &[String],
    ) -> StorageResult<ConsistencyGroupInfo> {
        if volume_uuids.is_empty() {
            return Err(refused_locally(format!(
                "consistency group {name}: no volumes given"
            )));
        }
        let wanted = self.volumes_in_svm(svm, volume_uuids).await?;
        let cg = match self.find_consistency_group(svm, name).await? {
            Some(cg) => cg,
            None => {
                let body = wire::ConsistencyGroupCreate {
                    name,
                    svm: wire::NameRef { name: svm },
                    volumes: wanted
                        .iter()
                        .map(|(_, n)| wire::CgVolumeAdd::existing(n))
                        .collect(),
                };
                let post = |timeout: Duration| {
                    let url = self.t().url(&["application", "consistency-groups"], &[]);
                    self.t().write_once(Method::POST, url, &body, timeout)
                };
                let lookup = |_: Lookup| self.find_consistency_group(svm, name);
                let what = format!("consistency group {name} in SVM {svm}");
                let cg = self
                    .create_adopting(
                        &what,
                        None,
                        OnAccepted::AwaitJob,
                        &[CODE_DUPLICATE, CODE_CG_DUPLICATE],
                        post,
                        lookup,
                    )
                    .await?;
                info!(consistency_group = name, uuid = %cg.uuid, "consistency group created");
                cg
            }
        };
        self.reconcile_members(svm, name, cg, &wanted).await
    }

    /// Makes an existing group hold exactly `wanted`: adds missing volumes (ONTAP can add
    /// by PATCH), refuses extra ones (ONTAP cannot remove by PATCH, and a snapshot of a
    /// volume nobody asked for is not ours to take).
    async fn reconcile_members(
        &self,
        svm: &str,
        name: &str,
        cg: wire::ConsistencyGroup,
        wanted: &[(String, String)],
    ) -> StorageResult<ConsistencyGroupInfo> {
        let members = |cg: &wire::ConsistencyGroup| -> BTreeSet<String> {
            // Match by uuid, or by name where the array gave only a name.
            cg.volumes
                .iter()
                .flatten()
                .filter_map(|v| {
                    v.uuid.clone().or_else(|| {
                        let n = v.name.as_deref()?;
                        wanted
                            .iter()
                            .find(|(_, wn)| wn == n)
                            .map(|(u, _)| u.clone())
                            .or_else(|| Some(format!("name:{n}")))
                    })
                })
                .collect()
        };
        let wanted_uuids: BTreeSet<String> = wanted.iter().map(|(u, _)| u.clone()).collect();
        let have = members(&cg);
        let extra: Vec<&String> = have.difference(&wanted_uuids).collect();
        if !extra.is_empty() {
            return Err(refused_locally(format!(
                "consistency group {name} in SVM {svm} also holds volumes {extra:?}; \
                 it would snapshot volumes nobody asked for (remove them, or use another group name)"
            )));
        }
        let missing: Vec<&(String, String)> =
            wanted.iter().filter(|(u, _)| !have.contains(u)).collect();
        let cg = if missing.is_empty() {
            cg
        } else {
            info!(
                consistency_group = name,
                n_missing = missing.len(),
                "adding volumes to consistency group"
            );
            let body = wire::ConsistencyGroupAddVolumes {
                volumes: missing
                    .iter()
                    .map(|(_, n)| wire::CgVolumeAdd::existing(n))
                    .collect(),
            };
            let url = self
                .t()
                .url(&["application", "consistency-groups", &cg.uuid], &[]);
            let patched = self.t().write_and_wait(Method::PATCH, url, &body).await;
            // Adding a member twice is harmless, so whatever the PATCH said, look.
            let after = self
                .find_consistency_group(svm, name)
                .await?
                .ok_or_else(|| StorageError::NotFound {
                    what: format!(
                        "consistency group {name} in SVM {svm} (vanished while adding volumes)"
                    ),
                })?;
            let now = members(&after);
            if let Some((u, n)) = wanted.iter().find(|(u, _)| !now.contains(u)) {
                return Err(match patched {
                    Err(e) if !matches!(e, StorageError::Refused { code: CODE_CG_DUPLICATE_MODIFY, .. }) => e,
                    _ => StorageError::Indeterminate {
                        message: format!("volume {n} ({u}) still not in consistency group {name} after adding it"),
                    },
                });
            }
            after
        };
        let volume_uuids: Vec<String> = wanted.iter().map(|(u, _)| u.clone()).collect();
        self.cg_members
            .lock()
            .expect("cg_members poisoned")
            .insert(cg.uuid.clone(), volume_uuids.clone());
        Ok(ConsistencyGroupInfo {
            uuid: cg.uuid,
            name: cg.name.unwrap_or_else(|| name.to_string()),
            volume_uuids,
        })
    }

    async fn find_consistency_group(
        &self,
        svm: &str,
        name: &str,
    ) -> StorageResult<Option<wire::ConsistencyGroup>> {
        let url = self.t().url(
            &["application", "consistency-groups"],
            &[
                ("svm.name", svm),
                ("name", name),
                ("fields", wire::CONSISTENCY_GROUP_FIELDS),
            ],
        );
        let records: Vec<wire::ConsistencyGroup> = self.t().get_collection(url, None).await?;
        Ok(records
            .into_iter()
            .find(|cg| cg.name.as_deref().is_none_or(|n| n == name)))
    }

    /// `(uuid, name)` of each volume, in the order given; each must exist in `svm`.
    async fn volumes_in_svm(
        &self,
        svm: &str,
        uuids: &[String],
    ) -> StorageResult<Vec<(String, String)>> {
        let joined = uuids.join("|");
        let url = self.t().url(
            &["storage", "volumes"],
            &[("uuid", &joined), ("fields", "uuid,name,svm.name")],
        );
        let records: Vec<wire::Volume> = self.t().get_collection(url, None).await?;
        uuids
            .iter()
            .map(|uuid| {
                let volume = records.iter().find(|v| &v.uuid == uuid).ok_or_else(|| {
                    StorageError::NotFound {
                        what: format!("volume {uuid}"),
                    }
                })?;
                match volume.svm.as_ref().and_then(|s| s.name.as_deref()) {
                    Some(other) if other != svm => Err(StorageError::NotFound {
                        what: format!(
                            "volume {} ({uuid}) in SVM {svm}: it is in SVM {other}",
                            volume.name
                        ),
                    }),
                    _ => Ok((uuid.clone(), volume.name.clone())),
                }
            })
            .collect()
    }

    /// The group's member volumes: remembered from `ensure_consistency_group`, else asked.
    async fn cg_member_uuids(
        &self,
        cg_uuid: &str,
        deadline: Option<Instant>,
    ) -> StorageResult<Vec<String>> {
        if let Some(known) = self
            .cg_members
            .lock()
            .expect("cg_members poisoned")
            .get(cg_uuid)
        {
            return Ok(known.clone());
        }
        let url = self.t().url(
            &["application", "consistency-groups", cg_uuid],
            &[("fields", wire::CONSISTENCY_GROUP_FIELDS)],
        );
        let cg: wire::ConsistencyGroup = self
            .t()
            .get_json(url, deadline)
            .await
            .map_err(|e| name_not_found(e, format!("consistency group {cg_uuid}")))?;
        let uuids: Vec<String> = cg
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.uuid.clone())
            .collect();
        if uuids.is_empty() {
            return Err(refused_locally(format!(
                "consistency group {cg_uuid} lists no member volume uuids"
            )));
        }
        self.cg_members
            .lock()
            .expect("cg_members poisoned")
            .insert(cg_uuid.to_string(), uuids.clone());
        Ok(uuids)
    }

    /// The snapshot `name` of every member: `Some` if all have it, `None` if none has it.
    async fn find_cg_snapshots(
        &self,
        cg_uuid: &str,
        name: &str,
        deadline: Option<Instant>,
    ) -> StorageResult<Option<Vec<SnapshotInfo>>> {
        let members = self.cg_member_uuids(cg_uuid, deadline).await?;
        let mut found = Vec::with_capacity(members.len());
        let mut absent = Vec::new();
        // One after another on the warm connection: parallel requests would open new
        // connections (and TLS handshakes) while the application is frozen.
        for volume_uuid in &members {
            match self.find_snapshot(volume_uuid, name, deadline).await? {
                Some(s) => found.push(s),
                None => absent.push(volume_uuid.clone()),
            }
        }
        match (found.is_empty(), absent.is_empty()) {
            (_, true) => Ok(Some(found)),
            (true, false) => Ok(None),
            (false, false) => Err(StorageError::Indeterminate {
                message: format!(
                    "consistency group {cg_uuid}: snapshot {name} exists on {} member(s) but not on {absent:?}",
                    found.len()
                ),
            }),
        }
    }

    #[tracing::instrument(skip(self), fields(deadline_ms = deadline.as_millis() as u64))]
    pub async fn create_cg_snapshot(
        &self,
        cg_uuid: &str,
        name: &str,
        deadline: Duration,
    ) -> StorageResult<Vec<SnapshotInfo>> {
        self.post_cg_snapshot(cg_uuid, name, deadline, true)
            .await?
            .ok_or_else(|| StorageError::Indeterminate {
                message: format!("snapshot {name} of consistency group {cg_uuid}: created but not read back"),
            })
    }

    /// As [`OntapClient::create_cg_snapshot`], without reading the member snapshots back
    /// once the array reports them taken (see [`OntapClient::take_snapshot`]).
    pub async fn take_cg_snapshot(&self, cg_uuid: &str, name: &str, deadline: Duration) -> StorageResult<()> {
        self.post_cg_snapshot(cg_uuid, name, deadline, false).await.map(|_| ())
    }

    async fn post_cg_snapshot(
        &self,
        cg_uuid: &str,
        name: &str,
        deadline: Duration,
        read_back: bool,
    ) -> StorageResult<Option<Vec<SnapshotInfo>>> {
        let deadline_at = Instant::now() + deadline;
        let body = wire::SnapshotCreate { name };
        let post = |timeout: Duration| {
            let return_timeout = return_timeout_secs(timeout).to_string();
            let url = self.t().url(
                &["application", "consistency-groups", cg_uuid, "snapshots"],
                &[("return_timeout", &return_timeout)],
            );
            self.t().write_once(Method::POST, url, &body, timeout)
        };
        let lookup = |kind: Lookup| async move {
            match (kind, read_back) {
                (Lookup::ReadBack, false) => Ok(Some(None)),
                _ => self.find_cg_snapshots(cg_uuid, name, Some(deadline_at)).await.map(|found| found.map(Some)),
            }
        };
        let what = format!("snapshot {name} of consistency group {cg_uuid}");
        let duplicates = [codes::DUPLICATE_SNAPSHOT_NAME, CODE_DUPLICATE];
        let snapshots = self
            .create_adopting(
                &what,
                Some(deadline_at),
                OnAccepted::Indeterminate,
                &duplicates,
                post,
                lookup,
            )
            .await?;
        info!(snapshot = name, read_back = snapshots.as_ref().map(Vec::len), "consistency group snapshot created");
        Ok(snapshots)
    }

    // ---------------------------------------------------------------- volumes

    #[tracing::instrument(skip(self))]
    pub async fn restore_volume(
        &self,
        volume_uuid: &str,
        snapshot_name: &str,
    ) -> StorageResult<()> {
        // The snapshot goes in the query, as netapp-ontap sends it; ONTAP refuses (918251)
        // a restore combined with any other change, hence the empty body.
        let url = self.t().url(
            &["storage", "volumes", volume_uuid],
            &[("restore_to.snapshot.name", snapshot_name)],
        );
        self.t()
            .write_and_wait(Method::PATCH, url, &serde_json::json!({}))
            .await
            .map_err(|e| name_not_found(e, format!("volume {volume_uuid}")))?;
        info!(snapshot = snapshot_name, "volume restored");
        Ok(())
    }

    /// Restore every member of a consistency group to the same-named group snapshot in one
    /// ONTAP operation, so a multi-volume app is never left with some volumes restored.
    #[tracing::instrument(skip(self))]
    pub async fn restore_consistency_group(&self, cg_uuid: &str, snapshot_name: &str) -> StorageResult<()> {
        // Unlike a volume, a consistency group takes the restore in the body.
        let url = self.t().url(&["application", "consistency-groups", cg_uuid], &[]);
        let body = serde_json::json!({"restore_to": {"snapshot": {"name": snapshot_name}}});
        self.t()
            .write_and_wait(Method::PATCH, url, &body)
            .await
            .map_err(|e| name_not_found(e, format!("consistency group {cg_uuid}")))?;
        info!(snapshot = snapshot_name, "consistency group restored");
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    pub async fn clone_volume(
        &self,
        parent_volume_uuid: &str,
        snapshot_name: &str,
        clone_name: &str,
        junction_path: Option<&str>,
    ) -> StorageResult<VolumeInfo> {
        let parent = self.volume(parent_volume_uuid).await?;
        let svm = parent.svm.as_str();
        let body = wire::VolumeCloneCreate {
            name: clone_name,
            svm: wire::NameRef { name: svm },
            clone: wire::CloneSpec {
                parent_volume: wire::UuidRef {
                    uuid: parent_volume_uuid,
                },
                parent_snapshot: wire::NameRef {
                    name: snapshot_name,
                },
                is_flexclone: true,
            },
            nas: junction_path.map(|path| wire::NasSpec { path }),
        };
        let post = |timeout: Duration| {
            let url = self.t().url(&["storage", "volumes"], &[]);
            self.t().write_once(Method::POST, url, &body, timeout)
        };
        let lookup =
            |purpose: Lookup| self.find_clone(svm, clone_name, parent_volume_uuid, purpose);
        let what = format!(
            "clone {clone_name} of volume {} ({parent_volume_uuid})",
            parent.name
        );
        let clone = self
            .create_adopting(
                &what,
                None,
                OnAccepted::AwaitJob,
                &[codes::DUPLICATE_VOLUME_NAME, CODE_DUPLICATE],
                post,
                lookup,
            )
            .await?;
        info!(clone = clone_name, uuid = %clone.uuid, parent = %parent.name, snapshot = snapshot_name, "volume cloned");
        Ok(clone)
    }

    /// The volume `name` in `svm`. When adopting, only a FlexClone of `parent_uuid` is ours;
    /// any other volume of that name is ONTAP's duplicate-name refusal.
    async fn find_clone(
        &self,
        svm: &str,
        name: &str,
        parent_uuid: &str,
        purpose: Lookup,
    ) -> StorageResult<Option<VolumeInfo>> {
        let url = self.t().url(
            &["storage", "volumes"],
            &[
                ("svm.name", svm),
                ("name", name),
                ("fields", wire::VOLUME_FIELDS),
            ],
        );
        let records: Vec<wire::Volume> = self.t().get_collection(url, None).await?;
        let Some(volume) = records.into_iter().find(|v| v.name == name) else {
            return Ok(None);
        };
        let info = self.volume_info(volume, svm).await?;
        if purpose == Lookup::Adopt && info.clone_parent_uuid.as_deref() != Some(parent_uuid) {
            return Err(StorageError::Refused {
                code: codes::DUPLICATE_VOLUME_NAME,
                message: format!("volume {name} already exists in SVM {svm} and is not a FlexClone of {parent_uuid}"),
                target: Some("name".to_string()),
            });
        }
        Ok(Some(info))
    }

    #[tracing::instrument(skip(self))]
    pub async fn split_clone(&self, volume_uuid: &str) -> StorageResult<()> {
        let url = self.t().url(&["storage", "volumes", volume_uuid], &[]);
        let body = wire::CloneSplit {
            clone: wire::CloneSplitSpec {
                split_initiated: true,
            },
        };
        match self.t().write_and_wait(Method::PATCH, url, &body).await {
            Ok(()) => {}
            Err(e) if e.is_indeterminate() => {
                // Asking twice would be refused once the split runs; look instead.
                if !self.split_started(volume_uuid).await.unwrap_or(false) {
                    return Err(e);
                }
                info!("clone split was already initiated");
            }
            Err(e) => return Err(name_not_found(e, format!("volume {volume_uuid}"))),
        }
        info!("clone split initiated");
        Ok(())
    }

    async fn split_started(&self, volume_uuid: &str) -> StorageResult<bool> {
        let url = self.t().url(
            &["storage", "volumes", volume_uuid],
            &[("fields", "clone.is_flexclone,clone.split_initiated")],
        );
        let volume: serde_json::Value = self.t().get_json(url, None).await?;
        let flag = |pointer: &str| volume.pointer(pointer).and_then(|v| v.as_bool());
        Ok(flag("/clone/split_initiated") == Some(true)
            || flag("/clone/is_flexclone") == Some(false))
    }

    #[tracing::instrument(skip(self))]
    pub async fn delete_volume(&self, volume_uuid: &str) -> StorageResult<()> {
        let url = self.t().url(&["storage", "volumes", volume_uuid], &[]);
        self.delete_idempotent(url, &[]).await
    }

    // ---------------------------------------------------------------- retry shapes

    /// DELETE with a `{}` body. Repeating a delete is harmless and "already gone" (404,
    /// code 4 or one of `gone_codes`) is success, so every uncertain outcome is retried.
    pub(crate) async fn delete_idempotent(&self, url: url::Url, gone_codes: &[u64]) -> StorageResult<()> {
        let gone = |e: &StorageError| match e {
            StorageError::NotFound { .. } => true,
            StorageError::Refused { code, .. } => gone_codes.contains(code),
            _ => false,
        };
        let bounds = &self.t().bounds;
        let mut last: Option<StorageError> = None;
        let mut may_have_landed = false;
        for attempt in 0..=bounds.retry_attempts_max {
            if attempt > 0 {
                tokio::time::sleep(bounds.backoff(attempt - 1)).await;
            }
            let outcome = match self
                .t()
                .write_once(
                    Method::DELETE,
                    url.clone(),
                    &serde_json::json!({}),
                    bounds.request_timeout,
                )
                .await
            {
                Ok(Written::Done) => Ok(()),
                Ok(Written::Accepted { job_uuid }) => self.t().await_job(&job_uuid).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    info!(path = url.path(), "deleted");
                    return Ok(());
                }
                Err(e) if gone(&e) => {
                    info!(path = url.path(), "already gone");
                    return Ok(());
                }
                Err(e) if e.is_retryable() || e.is_indeterminate() => {
                    may_have_landed |= e.is_indeterminate();
                    warn!(path = url.path(), attempt, error = %e, "delete outcome unknown; asking again");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(exhausted(
            format!("DELETE {}", url.path()),
            last,
            may_have_landed,
        ))
    }

    /// Creates an object that has a name, so that an uncertain attempt is resolved by
    /// looking, never by blindly sending the create again:
    /// - certainly not sent (refused connection, 408/429): send again;
    /// - may have landed (timeout, reset, 5xx): look it up by name; found: adopt it;
    ///   absent: it is safe to send again;
    /// - a duplicate-name refusal after an attempt that may have landed: that attempt
    ///   landed, adopt the object.
    ///
    /// With a `deadline`, every attempt, lookup and pause ends by it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create_adopting<T, P, PF, L, LF>(
        &self,
        what: &str,
        deadline: Option<Instant>,
        on_accepted: OnAccepted,
        duplicate_codes: &[u64],
        post: P,
        lookup: L,
    ) -> StorageResult<T>
    where
        P: Fn(Duration) -> PF,
        PF: Future<Output = StorageResult<Written>>,
        L: Fn(Lookup) -> LF,
        LF: Future<Output = StorageResult<Option<T>>>,
    {
        let bounds = &self.t().bounds;
        let mut may_have_landed = false;
        let mut last: Option<StorageError> = None;
        for attempt in 0..=bounds.retry_attempts_max {
            if attempt > 0 && !self.t().pause(bounds.backoff(attempt - 1), deadline).await {
                break;
            }
            if may_have_landed {
                match lookup(Lookup::Adopt).await {
                    Ok(Some(found)) => {
                        info!(what, attempt, "an earlier attempt landed; adopting it");
                        return Ok(found);
                    }
                    Ok(None) => tracing::debug!(
                        what,
                        attempt,
                        "earlier attempt did not land; sending again"
                    ),
                    Err(e) if e.is_retryable() || e.is_indeterminate() => {
                        last = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(timeout) = self.t().time_left(deadline) else {
                break;
            };
            let outcome = match post(timeout).await {
                Ok(Written::Done) => Ok(()),
                Ok(Written::Accepted { job_uuid }) => match on_accepted {
                    OnAccepted::Indeterminate => {
                        return Err(StorageError::Indeterminate {
                            message: format!(
                                "{what}: ONTAP job {job_uuid} still running at the deadline"
                            ),
                        })
                    }
                    OnAccepted::AwaitJob => match self.t().await_job(&job_uuid).await {
                        // Lost sight of a running job: sending again could race it.
                        Err(e) if e.is_indeterminate() => return Err(e),
                        other => other,
                    },
                },
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return self.read_back(what, &lookup).await,
                Err(StorageError::Refused { code, .. })
                    if may_have_landed && duplicate_codes.contains(&code) =>
                {
                    info!(
                        what,
                        code, "duplicate on a retried create: the earlier attempt landed"
                    );
                    return self.read_back(what, &lookup).await;
                }
                Err(e) if e.is_retryable() => {
                    warn!(what, attempt, error = %e, "create not sent; sending again");
                    last = Some(e);
                }
                Err(e) if e.is_indeterminate() => {
                    warn!(what, attempt, error = %e, "create may have landed; will look before sending again");
                    may_have_landed = true;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(exhausted(what.to_string(), last, may_have_landed))
    }

    /// Reads back an object the array said it created (or that a duplicate proved exists).
    async fn read_back<T, L, LF>(&self, what: &str, lookup: &L) -> StorageResult<T>
    where
        L: Fn(Lookup) -> LF,
        LF: Future<Output = StorageResult<Option<T>>>,
    {
        match lookup(Lookup::ReadBack).await {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(StorageError::Indeterminate {
                message: format!("{what}: the array reported it created, but it is not listed"),
            }),
            Err(e) => Err(StorageError::Indeterminate {
                message: format!("{what}: created, but reading it back failed: {e}"),
            }),
        }
    }
}

/// The error after the attempts (or the deadline) ran out.
fn exhausted(what: String, last: Option<StorageError>, may_have_landed: bool) -> StorageError {
    let cause = last
        .map(|e| e.to_string())
        .unwrap_or_else(|| "deadline reached before sending".to_string());
    if may_have_landed {
        StorageError::Indeterminate {
            message: format!("{what}: outcome unknown: {cause}"),
        }
    } else {
        StorageError::Retryable {
            message: format!("{what}: not done: {cause}"),
        }
    }
}

/// ONTAP's `return_timeout` is whole seconds: round up (at least 1, at most ONTAP's 120).
fn return_timeout_secs(timeout: Duration) -> u64 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    secs.clamp(1, RETURN_TIMEOUT_SECS_MAX)
}

/// A 404 says which URL was missing; say which object instead.
pub(crate) fn name_not_found(error: StorageError, what: String) -> StorageError {
    match error {
        StorageError::NotFound { what: detail } => StorageError::NotFound {
            what: format!("{what} ({detail})"),
        },
        other => other,
    }
}

fn snapshot_info(snapshot: wire::Snapshot, volume_uuid: &str) -> StorageResult<SnapshotInfo> {
    let raw = snapshot.create_time.as_deref().unwrap_or("");
    let create_time = wire::parse_time(raw).ok_or_else(|| StorageError::Retryable {
        message: format!(
            "snapshot {} of volume {volume_uuid}: unusable create_time {raw:?}",
            snapshot.name
        ),
    })?;
    Ok(SnapshotInfo {
        uuid: snapshot.uuid,
        name: snapshot.name,
        volume_uuid: volume_uuid.to_string(),
        create_time,
        owners: snapshot.owners.unwrap_or_default(),
    })
}

#[async_trait]
impl Storage for OntapClient {
    async fn warm_up(&self) -> StorageResult<()> {
        OntapClient::warm_up(self).await
    }
    async fn volumes_by_name(&self, svm: &str, names: &[String]) -> StorageResult<Vec<VolumeInfo>> {
        OntapClient::volumes_by_name(self, svm, names).await
    }
    async fn volume(&self, uuid: &str) -> StorageResult<VolumeInfo> {
        OntapClient::volume(self, uuid).await
    }
    async fn volumes_by_junction_path(&self, junction_path: &str) -> StorageResult<Vec<VolumeInfo>> {
        OntapClient::volumes_by_junction_path(self, junction_path).await
    }
    async fn create_snapshot(
        &self,
        volume_uuid: &str,
        name: &str,
        deadline: Duration,
    ) -> StorageResult<SnapshotInfo> {
        OntapClient::create_snapshot(self, volume_uuid, name, deadline).await
    }
    async fn snapshot_by_name(
        &self,
        volume_uuid: &str,
        name: &str,
    ) -> StorageResult<Option<SnapshotInfo>> {
        OntapClient::snapshot_by_name(self, volume_uuid, name).await
    }
    async fn snapshots(&self, volume_uuid: &str) -> StorageResult<Vec<SnapshotInfo>> {
        OntapClient::snapshots(self, volume_uuid).await
    }
    async fn delete_snapshot(&self, volume_uuid: &str, snapshot_uuid: &str) -> StorageResult<()> {
        OntapClient::delete_snapshot(self, volume_uuid, snapshot_uuid).await
    }
    async fn ensure_consistency_group(
        &self,
        svm: &str,
        name: &str,
        volume_uuids: &[String],
    ) -> StorageResult<ConsistencyGroupInfo> {
        OntapClient::ensure_consistency_group(self, svm, name, volume_uuids).await
    }
    async fn create_cg_snapshot(
        &self,
        cg_uuid: &str,
        name: &str,
        deadline: Duration,
    ) -> StorageResult<Vec<SnapshotInfo>> {
        OntapClient::create_cg_snapshot(self, cg_uuid, name, deadline).await
    }
    async fn take_snapshot(&self, volume_uuid: &str, name: &str, deadline: Duration) -> StorageResult<()> {
        OntapClient::take_snapshot(self, volume_uuid, name, deadline).await
    }
    async fn take_cg_snapshot(&self, cg_uuid: &str, name: &str, deadline: Duration) -> StorageResult<()> {
        OntapClient::take_cg_snapshot(self, cg_uuid, name, deadline).await
    }
    async fn restore_volume(&self, volume_uuid: &str, snapshot_name: &str) -> StorageResult<()> {
        OntapClient::restore_volume(self, volume_uuid, snapshot_name).await
    }
    async fn restore_consistency_group(&self, cg_uuid: &str, snapshot_name: &str) -> StorageResult<()> {
        OntapClient::restore_consistency_group(self, cg_uuid, snapshot_name).await
    }
    async fn clone_volume(
        &self,
        parent_volume_uuid: &str,
        snapshot_name: &str,
        clone_name: &str,
        junction_path: Option<&str>,
    ) -> StorageResult<VolumeInfo> {
        OntapClient::clone_volume(
            self,
            parent_volume_uuid,
            snapshot_name,
            clone_name,
            junction_path,
        )
        .await
    }
    async fn split_clone(&self, volume_uuid: &str) -> StorageResult<()> {
        OntapClient::split_clone(self, volume_uuid).await
    }
    async fn delete_volume(&self, volume_uuid: &str) -> StorageResult<()> {
        OntapClient::delete_volume(self, volume_uuid).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_timeout_rounds_up_within_ontap_limits() {
        assert_eq!(return_timeout_secs(Duration::from_millis(1)), 1);
        assert_eq!(return_timeout_secs(Duration::from_millis(1000)), 1);
        assert_eq!(return_timeout_secs(Duration::from_millis(1001)), 2);
        assert_eq!(return_timeout_secs(Duration::from_millis(2500)), 3);
        assert_eq!(return_timeout_secs(Duration::from_secs(500)), 120);
    }
}
