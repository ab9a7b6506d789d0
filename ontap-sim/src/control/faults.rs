//! Fault injection: rules that match ONTAP API requests by method and path and make them
//! fail, slow down, lose their connection, or leave their job failed or hanging.
//!
//! Every decision draws from one seeded generator, so a seeded run injects the same faults
//! in the same places each time it is replayed.

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What a matching rule does to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this HTTP status and ONTAP error instead of handling the request.
    Error {
        status: u16,
        code: u64,
        #[serde(default = "default_error_message")]
        message: String,
    },
    /// Delay the answer. With `before: false` (the default) the request takes effect first
    /// and only the answer is late, which is what makes a client timeout indeterminate.
    Latency {
        ms: u64,
        #[serde(default)]
        before: bool,
    },
    /// Close the connection without answering. With `after_apply` the request took effect.
    Drop {
        #[serde(default)]
        after_apply: bool,
    },
    /// The request is accepted (202) but its job ends in failure with this ONTAP error;
    /// nothing changes.
    JobFail {
        code: u64,
        #[serde(default = "default_job_message")]
        message: String,
    },
    /// The request is accepted but its job stays `running` for good; nothing changes.
    JobHang,
    /// The job runs for `ms` before it takes effect and succeeds.
    JobDelay { ms: u64 },
}

fn default_error_message() -> String {
    "Injected fault.".to_string()
}

fn default_job_message() -> String {
    "Job failed (injected fault).".to_string()
}

impl FaultAction {
    /// Job faults only apply to requests that start a job (writes).
    pub fn is_job_fault(&self) -> bool {
        matches!(self, FaultAction::JobFail { .. } | FaultAction::JobHang | FaultAction::JobDelay { .. })
    }
}

/// A rule as clients post it to `/sim/v1/faults`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRuleSpec {
    /// HTTP method to match (`POST`, ...); absent matches any.
    #[serde(default)]
    pub method: Option<String>,
    /// Path pattern: `*` matches within one path segment, `**` across segments.
    pub path: String,
    pub action: FaultAction,
    /// Chance that a matching request is hit, 0 to 1.
    #[serde(default = "one")]
    pub probability: f64,
    /// Hit at most this many requests, then stay inert.
    #[serde(default)]
    pub count: Option<u64>,
}

fn one() -> f64 {
    1.0
}

#[derive(Clone, Debug, Serialize)]
pub struct FaultRule {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultRuleSpec,
    pub hits: u64,
}

struct Rules {
    rules: Vec<FaultRule>,
    next_id: u64,
    rng: ChaCha8Rng,
}

pub struct FaultInjector {
    inner: Mutex<Rules>,
}

impl FaultInjector {
    pub fn new(seed: u64) -> Self {
        FaultInjector { inner: Mutex::new(Rules { rules: Vec::new(), next_id: 1, rng: ChaCha8Rng::seed_from_u64(seed) }) }
    }

    pub fn reseed(&self, seed: u64) {
        self.inner.lock().rng = ChaCha8Rng::seed_from_u64(seed);
    }

    pub fn add(&self, spec: FaultRuleSpec) -> Result<u64, String> {
        if !(0.0..=1.0).contains(&spec.probability) {
            return Err(format!("probability must be between 0 and 1, not {}", spec.probability));
        }
        if !spec.path.starts_with('/') {
            return Err(format!("path pattern must start with '/': {:?}", spec.path));
        }
        if let FaultAction::Error { status, .. } = &spec.action {
            if !(400..=599).contains(status) {
                return Err(format!("an error fault needs a 4xx or 5xx status, not {status}"));
            }
        }
        let mut rules = self.inner.lock();
        let id = rules.next_id;
        rules.next_id += 1;
        rules.rules.push(FaultRule { id, spec, hits: 0 });
        Ok(id)
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut rules = self.inner.lock();
        let before = rules.rules.len();
        rules.rules.retain(|r| r.id != id);
        rules.rules.len() != before
    }

    pub fn clear(&self) {
        self.inner.lock().rules.clear();
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.inner.lock().rules.clone()
    }

    /// The action for this request, if a rule hits it. The first matching rule with hits left
    /// decides; its probability is drawn from the seeded generator.
    pub fn check(&self, method: &str, path: &str, is_write: bool) -> Option<FaultAction> {
        let mut guard = self.inner.lock();
        let Rules { rules, rng, .. } = &mut *guard;
        for rule in rules.iter_mut() {
            let spec = &rule.spec;
            if spec.method.as_deref().is_some_and(|m| !m.eq_ignore_ascii_case(method)) || !glob_match(&spec.path, path) {
                continue;
            }
            if spec.action.is_job_fault() && !is_write {
                continue;
            }
            if spec.count.is_some_and(|c| rule.hits >= c) {
                continue;
            }
            if spec.probability < 1.0 && !rng.gen_bool(spec.probability) {
                continue;
            }
            rule.hits += 1;
            return Some(spec.action.clone());
        }
        None
    }
}

/// `*` matches any run of characters other than `/`; `**` matches anything.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p {
            [] => t.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=t.len()).any(|i| go(rest, &t[i..])),
            [b'*', rest @ ..] => {
                let limit = t.iter().position(|&c| c == b'/').unwrap_or(t.len());
                (0..=limit).any(|i| go(rest, &t[i..]))
            }
            [c, rest @ ..] => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, action: FaultAction, probability: f64, count: Option<u64>) -> FaultRuleSpec {
        FaultRuleSpec { method: Some("POST".into()), path: path.into(), action, probability, count }
    }

    #[test]
    fn glob_matches_segments() {
        assert!(glob_match("/api/storage/volumes/*/snapshots", "/api/storage/volumes/abc/snapshots"));
        assert!(!glob_match("/api/storage/volumes/*/snapshots", "/api/storage/volumes/a/b/snapshots"));
        assert!(glob_match("/api/**", "/api/storage/volumes/a/snapshots"));
        assert!(!glob_match("/api/cluster", "/api/cluster/jobs"));
    }

    #[test]
    fn count_limits_hits_and_method_filters() {
        let faults = FaultInjector::new(1);
        faults.add(rule("/api/**", FaultAction::JobHang, 1.0, Some(2))).unwrap();
        assert_eq!(faults.check("GET", "/api/storage/volumes", false), None, "method must match");
        assert_eq!(faults.check("POST", "/api/storage/volumes", true), Some(FaultAction::JobHang));
        assert_eq!(faults.check("POST", "/api/storage/volumes", true), Some(FaultAction::JobHang));
        assert_eq!(faults.check("POST", "/api/storage/volumes", true), None, "count exhausted");
        assert_eq!(faults.list()[0].hits, 2);
    }

    #[test]
    fn same_seed_same_decisions() {
        let draw = |seed| {
            let faults = FaultInjector::new(seed);
            faults.add(rule("/api/**", FaultAction::Drop { after_apply: false }, 0.5, None)).unwrap();
            (0..64).map(|_| faults.check("POST", "/api/x", true).is_some()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let hits = draw(7).iter().filter(|h| **h).count();
        assert!((16..=48).contains(&hits), "probability 0.5 gave {hits}/64");
    }

    #[test]
    fn bad_rules_are_refused() {
        let faults = FaultInjector::new(0);
        assert!(faults.add(rule("/api", FaultAction::JobHang, 1.5, None)).is_err());
        assert!(faults.add(rule("api", FaultAction::JobHang, 1.0, None)).is_err());
        assert!(faults.add(rule("/api", FaultAction::Error { status: 200, code: 1, message: String::new() }, 1.0, None)).is_err());
    }
}
