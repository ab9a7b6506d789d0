//! Leader election on a coordination.k8s.io/v1 Lease, two candidates sharing one in-memory
//! API server with the real semantics (resourceVersion, 409 Conflict / AlreadyExists), on
//! tokio's paused clock: time advances only when every task waits, so runs are
//! deterministic and take milliseconds.

mod apiserver;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::ApiServer;
use serde_json::json;
use stasis_k8s::leader::{LeaderElector, LeaseConfig, Leadership};
use tokio::sync::watch;
use tokio::time::Instant;

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/stasis-system/leases/stasis-operator";

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig::new("stasis-system", "stasis-operator", identity)
}

/// Who led when, as each candidate published it.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<(Instant, String, bool)>>>);

impl Timeline {
    fn record(&self, who: &str, mut leadership: Leadership) {
        let this = self.clone();
        let who = who.to_string();
        tokio::spawn(async move {
            loop {
                if !leadership.until_leader().await {
                    return;
                }
                this.0.lock().unwrap().push((Instant::now(), who.clone(), true));
                leadership.until_lost().await;
                this.0.lock().unwrap().push((Instant::now(), who.clone(), false));
            }
        });
    }

    fn events(&self) -> Vec<(Instant, String, bool)> {
        self.0.lock().unwrap().clone()
    }

    /// Intervals during which two candidates both led (empty = safe). An end and a start at
    /// the same instant do not overlap (the end is published first).
    fn overlaps(&self) -> Vec<String> {
        let mut leading: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for (t, who, leads) in self.events() {
            if leads {
                if !leading.is_empty() {
                    out.push(format!("{who} started leading at {t:?} while {leading:?} led"));
                }
                leading.push(who);
            } else {
                leading.retain(|w| w != &who);
            }
        }
        out
    }

    fn led(&self, who: &str) -> Vec<Instant> {
        self.events().into_iter().filter(|(_, w, l)| w == who && *l).map(|(t, _, _)| t).collect()
    }
}

struct Candidate {
    leadership: Leadership,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(elector: LeaderElector, who: &str, timeline: &Timeline) -> Candidate {
    let (stop, mut stop_rx) = watch::channel(false);
    let (leadership, task) = elector.spawn(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    });
    timeline.record(who, leadership.clone());
    Candidate { leadership, stop, task }
}

async fn wait_until(what: &str, max: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + max;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} did not happen within {max:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_standby_takes_over_only_after_the_holder_stops_renewing() {
    let server = ApiServer::new();
    let (client_a, link_a) = server.client("a");
    let (client_b, _) = server.client("b");
    let timeline = Timeline::default();

    let a = start(LeaderElector::new(client_a, config("a")).unwrap(), "a", &timeline);
    wait_until("a leads", Duration::from_secs(5), || a.leadership.is_leader()).await;
    let b = start(LeaderElector::new(client_b, config("b")).unwrap(), "b", &timeline);

    // A renews every retry period: B waits, however long.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(a.leadership.is_leader() && !b.leadership.is_leader());
    let lease = server.get(LEASE_PATH).expect("the Lease exists");
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(lease["spec"]["leaseTransitions"], 0);
    let a_renewals = server.log().iter().filter(|l| l.client == "a" && l.method == "PUT" && l.status == Some(200)).count();
    assert!(a_renewals >= 25, "a renewed every 2 s for 60 s: {a_renewals}");

    // A's link goes silent: its renewals hang. It must step down on its own (renew deadline
    // 10 s) before B may take over (lease duration 15 s after B last saw the record change).
    let cut_at = Instant::now();
    link_a.cut();
    wait_until("b leads", Duration::from_secs(60), || b.leadership.is_leader()).await;
    assert!(!a.leadership.is_leader(), "a still leads after b took over");
    let b_led_at = timeline.led("b")[0];
    let a_stopped_at = timeline.events().iter().find(|(_, w, l)| w == "a" && !*l).map(|(t, _, _)| *t).expect("a stepped down");
    assert!(a_stopped_at <= cut_at + Duration::from_secs(10), "a stepped down within its renew deadline");
    assert!(b_led_at >= cut_at + Duration::from_secs(13), "b waited out the lease (from its last observation), took {:?}", b_led_at - cut_at);
    assert!(timeline.overlaps().is_empty(), "{:?}", timeline.overlaps());

    let lease = server.get(LEASE_PATH).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "one hand-over");
    assert_ne!(lease["spec"]["acquireTime"], json!(null));

    // A comes back: it sees B's renewals and stays a candidate.
    link_a.heal();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(b.leadership.is_leader() && !a.leadership.is_leader());
    assert_eq!(timeline.led("a").len(), 1, "a never led again");
    assert!(timeline.overlaps().is_empty(), "{:?}", timeline.overlaps());

    // Graceful hand-over: B stops, releases the Lease, A takes it at its next attempt.
    let released_at = Instant::now();
    b.stop.send(true).unwrap();
    b.task.await.unwrap();
    wait_until("a leads again", Duration::from_secs(10), || a.leadership.is_leader()).await;
    assert!(Instant::now() < released_at + Duration::from_secs(5), "a released lease is taken without waiting out its duration");
    assert_eq!(server.get(LEASE_PATH).unwrap()["spec"]["leaseTransitions"], 2);
    assert!(timeline.overlaps().is_empty(), "{:?}", timeline.overlaps());
    a.stop.send(true).unwrap();
    a.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn racing_candidates_get_409_and_exactly_one_leads() {
    let server = ApiServer::new();
    // An expired Lease of a replica that is gone.
    server.seed(
        "/apis/coordination.k8s.io/v1/namespaces/stasis-system/leases",
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "stasis-operator", "namespace": "stasis-system"},
               "spec": {"holderIdentity": "gone-7f9c", "leaseDurationSeconds": 15, "leaseTransitions": 4,
                        "acquireTime": "2026-11-20T07:00:00.000000Z", "renewTime": "2026-11-20T07:59:58.000000Z"}}),
    );
    let timeline = Timeline::default();
    let mut candidates = Vec::new();
    for who in ["a", "b", "c"] {
        let (client, _) = server.client(who);
        candidates.push(start(LeaderElector::new(client, config(who)).unwrap(), who, &timeline));
    }
    // All three observe the record at the same instant and try to take it at the same
    // instant, 15 s later: the API server lets one update through and answers 409 to the rest.
    wait_until("someone leads", Duration::from_secs(30), || candidates.iter().any(|c| c.leadership.is_leader())).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let leaders = candidates.iter().filter(|c| c.leadership.is_leader()).count();
    assert_eq!(leaders, 1, "exactly one leader");
    let conflicts = server.log().iter().filter(|l| l.method == "PUT" && l.status == Some(409)).count();
    assert!(conflicts >= 2, "the losers' updates were refused with 409: {conflicts}");
    let lease = server.get(LEASE_PATH).unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 5, "one transition, not three");
    assert!(timeline.overlaps().is_empty(), "{:?}", timeline.overlaps());

    // Creating a Lease that exists answers 409 AlreadyExists; a fresh pair races on create.
    let server = ApiServer::new();
    let timeline = Timeline::default();
    let (c1, _) = server.client("x");
    let (c2, _) = server.client("y");
    let x = start(LeaderElector::new(c1, config("x")).unwrap(), "x", &timeline);
    let y = start(LeaderElector::new(c2, config("y")).unwrap(), "y", &timeline);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(x.leadership.is_leader() ^ y.leadership.is_leader(), "exactly one of two leads");
    assert!(server.log().iter().any(|l| l.method == "POST" && l.status == Some(409)), "the second create got 409 AlreadyExists");
    assert!(timeline.overlaps().is_empty());
}

/// Negative control: with a renew deadline longer than the lease (a broken elector that
/// keeps leading after others may take over), the same check finds two leaders.
#[tokio::test(start_paused = true)]
async fn negative_control_a_leader_that_outlives_its_lease_is_caught() {
    let server = ApiServer::new();
    let (client_a, link_a) = server.client("a");
    let (client_b, _) = server.client("b");
    let timeline = Timeline::default();
    let broken = LeaseConfig { renew_deadline: Duration::from_secs(40), ..config("a") };
    assert!(broken.validate().is_err(), "the real constructor refuses such bounds");
    let a = start(LeaderElector::new_unvalidated(client_a, broken), "a", &timeline);
    wait_until("a leads", Duration::from_secs(5), || a.leadership.is_leader()).await;
    let b = start(LeaderElector::new(client_b, config("b")).unwrap(), "b", &timeline);
    tokio::time::sleep(Duration::from_secs(5)).await;
    link_a.cut();
    wait_until("b leads", Duration::from_secs(60), || b.leadership.is_leader()).await;
    assert!(!timeline.overlaps().is_empty(), "the checker must see a and b leading at once");
}

#[test]
fn bounds_must_nest() {
    assert!(config("a").validate().is_ok());
    assert!(LeaseConfig { renew_deadline: Duration::from_secs(15), ..config("a") }.validate().is_err());
    assert!(LeaseConfig { retry_period: Duration::from_secs(10), ..config("a") }.validate().is_err());
    assert!(LeaseConfig { lease_duration: Duration::from_millis(15500), ..config("a") }.validate().is_err());
    assert!(config("").validate().is_err());
}
