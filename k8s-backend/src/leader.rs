//! Leader election on a `coordination.k8s.io/v1` Lease, the protocol of client-go's
//! `leaderelection` package (kube-runtime 5 ships none): the Lease's `holderIdentity`,
//! `leaseDurationSeconds`, `acquireTime`, `renewTime` and `leaseTransitions` are the record;
//! every write carries the `resourceVersion` just read, so of two candidates racing for
//! the same Lease one gets 409 Conflict and loses.
//!
//! Timing, and why there are never two leaders:
//! - A candidate judges expiry by its own monotonic clock, from the moment it *observed*
//!   the record change (not from `renewTime`, which another machine's clock wrote): a
//!   record unchanged for `leaseDurationSeconds` of local time is expired.
//! - The leader counts its own validity from the moment it *started* its last successful
//!   renewal (before that write reached the API server), and steps down once
//!   `renew_deadline` (< the lease duration) has passed without another: so it stops
//!   reconciling before any other candidate can consider the lease expired, whatever the
//!   network did to its requests. A renewal that hangs is cut off at that deadline.
//! - A renewal that finds another holder (someone took over) steps down at once.
//! - On shutdown the leader releases the Lease (holder cleared) so another replica takes
//!   over without waiting out the duration.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Context, K8sResult};

/// client-go's defaults (kube-controller-manager uses the same).
pub const LEASE_DURATION_DEFAULT: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE_DEFAULT: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD_DEFAULT: Duration = Duration::from_secs(2);
/// Attempts in a row within one cycle after a 409 (the Lease changed between read and
/// write): each attempt reads it again.
const CONFLICT_RETRIES_MAX: u32 = 3;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: LEASE_DURATION_DEFAULT,
            renew_deadline: RENEW_DEADLINE_DEFAULT,
            retry_period: RETRY_PERIOD_DEFAULT,
        }
    }

    /// The bounds must nest: retry < renew deadline < lease duration, or a leader could
    /// outlive its lease in another candidate's eyes.
    pub fn validate(&self) -> Result<(), String> {
        if self.identity.is_empty() {
            return Err("leader election needs a non-empty identity (the pod name)".into());
        }
        if !(self.retry_period < self.renew_deadline && self.renew_deadline < self.lease_duration) {
            return Err(format!(
                "leader election needs retry period ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                self.retry_period, self.renew_deadline, self.lease_duration
            ));
        }
        if self.lease_duration.as_secs() < 1 || self.lease_duration.subsec_nanos() != 0 {
            return Err(format!("the lease duration must be whole seconds (the Lease records seconds), got {:?}", self.lease_duration));
        }
        Ok(())
    }
}

/// Whether this replica leads, as the rest of the process sees it.
#[derive(Clone)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// Always leader: for a single replica run without election.
    pub fn always() -> Leadership {
        let (tx, rx) = watch::channel(true);
        // Keep the sender alive for the life of the process, so the value never changes.
        std::mem::forget(tx);
        Leadership(rx)
    }

    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Wait until this replica leads. `false` if the elector is gone.
    pub async fn until_leader(&mut self) -> bool {
        self.0.wait_for(|l| *l).await.is_ok()
    }

    /// Wait until this replica no longer leads (also when the elector is gone).
    pub async fn until_lost(&mut self) {
        let _ = self.0.wait_for(|l| !*l).await;
    }
}

/// What a candidate last saw of the Lease, and when (its own clock).
struct Observed {
    resource_version: Option<String>,
    holder: Option<String>,
    duration: Duration,
    at: Instant,
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
}

enum Attempt {
    /// This replica holds the lease (acquired or renewed).
    Held,
    /// Another holder's lease is still valid.
    HeldBy(String),
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(Self::new_unvalidated(client, config))
    }

    /// Without the check of the bounds: only for the negative control that shows the
    /// election test catches two leaders when the renew deadline outlasts the lease.
    #[doc(hidden)]
    pub fn new_unvalidated(client: Client, config: LeaseConfig) -> Self {
        LeaderElector { api: Api::namespaced(client, &config.namespace), config, observed: None }
    }

    fn spec(&self, acquire_time: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs() as i32),
            acquire_time,
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let rv = lease.metadata.resource_version.clone();
        if self.observed.as_ref().is_some_and(|o| o.resource_version == rv) {
            return;
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let seconds = spec.lease_duration_seconds.unwrap_or(self.config.lease_duration.as_secs() as i32).max(1);
        self.observed = Some(Observed {
            resource_version: rv,
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            duration: Duration::from_secs(seconds as u64),
            at: Instant::now(),
        });
    }

    /// One read-decide-write cycle of client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self) -> K8sResult<Attempt> {
        let name = self.config.name.clone();
        let what = || format!("reading Lease {}/{}", self.config.namespace, self.config.name);
        let Some(lease) = self.api.get_opt(&name).await.ctx(what)? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(self.config.namespace.clone()), ..Default::default() },
                spec: Some(self.spec(Some(now()), 0)),
            };
            let created = self.api.create(&PostParams::default(), &lease).await.ctx(|| format!("creating Lease {}/{name}", self.config.namespace))?;
            self.observe(&created);
            return Ok(Attempt::Held);
        };
        self.observe(&lease);
        let observed = self.observed.as_ref().expect("just observed");
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = observed.holder.as_deref() == Some(self.config.identity.as_str());
        if let Some(holder) = &observed.holder {
            if !mine && Instant::now() < observed.at + observed.duration {
                return Ok(Attempt::HeldBy(holder.clone()));
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if mine { self.spec(spec.acquire_time.clone(), transitions) } else { self.spec(Some(now()), transitions + 1) };
        let update = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.config.namespace.clone()),
                resource_version: lease.metadata.resource_version.clone(),
                ..Default::default()
            },
            spec: Some(new_spec),
        };
        let replaced = self.api.replace(&name, &PostParams::default(), &update).await.ctx(|| format!("updating Lease {}/{name}", self.config.namespace))?;
        if !mine {
            tracing::info!(lease = %name, identity = %self.config.identity, previous = ?observed.holder, "acquired the lease");
        }
        self.observe(&replaced);
        Ok(Attempt::Held)
    }

    /// An attempt, read again after a 409 (the Lease changed between read and write).
    async fn attempt(&mut self) -> K8sResult<Attempt> {
        let mut conflicts = 0;
        loop {
            match self.try_acquire_or_renew().await {
                Err(e) if e.is_conflict() && conflicts < CONFLICT_RETRIES_MAX => {
                    conflicts += 1;
                    tracing::debug!(identity = %self.config.identity, "the Lease changed under us (409); reading it again");
                }
                other => return other,
            }
        }
    }

    /// Clear the holder so another candidate need not wait out the lease.
    async fn release(&mut self) -> K8sResult<()> {
        let name = self.config.name.clone();
        let Some(lease) = self.api.get_opt(&name).await.ctx(|| format!("reading Lease {name}"))? else { return Ok(()) };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let update = Lease {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(self.config.namespace.clone()), resource_version: lease.metadata.resource_version.clone(), ..Default::default() },
            spec: Some(LeaseSpec { holder_identity: None, lease_duration_seconds: Some(1), acquire_time: Some(now()), renew_time: Some(now()), lease_transitions: spec.lease_transitions, ..Default::default() }),
        };
        self.api.replace(&name, &PostParams::default(), &update).await.ctx(|| format!("releasing Lease {name}"))?;
        Ok(())
    }

    /// Run the election until `shutdown` resolves, publishing leadership on `leading`
    /// (false before anything else happens when leadership is lost). On shutdown a leader
    /// steps down first, then releases the Lease.
    pub async fn run(mut self, leading: watch::Sender<bool>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let identity = self.config.identity.clone();
        loop {
            // Candidate: try every retry period until the lease is ours.
            let mut valid_until = loop {
                let started = Instant::now();
                // Bounded like a renewal: an attempt that hangs is abandoned and made again.
                match tokio::time::timeout(self.config.renew_deadline, self.attempt()).await {
                    Ok(Ok(Attempt::Held)) => break started + self.config.renew_deadline,
                    Ok(Ok(Attempt::HeldBy(holder))) => tracing::debug!(%identity, %holder, "the lease is held"),
                    Ok(Err(e)) => tracing::warn!(%identity, error = %e, "leader election attempt failed"),
                    Err(_) => tracing::warn!(%identity, "leader election attempt did not answer within the renew deadline"),
                }
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(self.config.retry_period) => {}
                }
            };
            tracing::info!(%identity, "leading");
            leading.send_replace(true);
            // Leader: renew every retry period; step down when the deadline passes.
            let reason = loop {
                let wake = (Instant::now() + self.config.retry_period).min(valid_until);
                tokio::select! {
                    _ = &mut shutdown => {
                        leading.send_replace(false);
                        if let Err(e) = self.release().await {
                            tracing::warn!(%identity, error = %e, "could not release the lease; it expires on its own");
                        }
                        return;
                    }
                    _ = tokio::time::sleep_until(wake) => {}
                }
                if Instant::now() >= valid_until {
                    break "no renewal succeeded within the renew deadline".to_string();
                }
                let started = Instant::now();
                match tokio::time::timeout_at(valid_until, self.attempt()).await {
                    Ok(Ok(Attempt::Held)) => valid_until = started + self.config.renew_deadline,
                    Ok(Ok(Attempt::HeldBy(holder))) => break format!("{holder} holds the lease now"),
                    Ok(Err(e)) => tracing::warn!(%identity, error = %e, "renewing the lease failed; retrying until the renew deadline"),
                    Err(_) => break "the renewal did not answer within the renew deadline".to_string(),
                }
            };
            leading.send_replace(false);
            tracing::warn!(%identity, %reason, "stepped down");
            // Start over as a candidate with a fresh view of the record.
            self.observed = None;
        }
    }

    /// Spawn the election; the handle ends after `shutdown` (and the release).
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> (Leadership, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(self.run(tx, shutdown));
        (Leadership(rx), task)
    }
}
