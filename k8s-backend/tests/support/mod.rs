//! A fake Kubernetes API server behind kube's `Client`, on `tower_test::mock::pair`: each
//! request is matched against rules (method, path, optional query fragment), answered with
//! a status and a JSON body shaped as the real API server's, and recorded (with its body)
//! so tests can assert what was sent and in which order. A request no rule matches is
//! answered 404 with a `Status` naming it and is reported by `unmatched()`.
#![allow(dead_code)]

pub mod fixtures;
pub mod relay;
pub mod store;

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

impl Recorded {
    pub fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }
}

type Respond = Box<dyn FnMut(&Recorded) -> (u16, Value) + Send>;

pub struct Rule {
    method: &'static str,
    path: String,
    /// Match every path under `path` (`path` ends with `/`), not only `path` itself.
    prefix: bool,
    query: Option<String>,
    times: Option<usize>,
    respond: Respond,
}

pub fn rule(method: &'static str, path: impl Into<String>, respond: impl FnMut(&Recorded) -> (u16, Value) + Send + 'static) -> Rule {
    Rule { method, path: path.into(), prefix: false, query: None, times: None, respond: Box::new(respond) }
}

/// A rule for every path that starts with `prefix`.
pub fn rule_prefix(method: &'static str, prefix: impl Into<String>, respond: impl FnMut(&Recorded) -> (u16, Value) + Send + 'static) -> Rule {
    Rule { method, path: prefix.into(), prefix: true, query: None, times: None, respond: Box::new(respond) }
}

/// A rule answering the same body every time.
pub fn fixed(method: &'static str, path: impl Into<String>, status: u16, body: Value) -> Rule {
    rule(method, path, move |_| (status, body.clone()))
}

impl Rule {
    pub fn query(mut self, fragment: impl Into<String>) -> Rule {
        self.query = Some(fragment.into());
        self
    }
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
}

#[derive(Clone, Default)]
pub struct FakeApi {
    log: Arc<Mutex<Vec<Recorded>>>,
    unmatched: Arc<Mutex<Vec<String>>>,
    rules: Arc<Mutex<Vec<Rule>>>,
}

impl FakeApi {
    pub fn log(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
    pub fn lines(&self) -> Vec<String> {
        self.log().iter().map(Recorded::line).collect()
    }
    pub fn unmatched(&self) -> Vec<String> {
        self.unmatched.lock().unwrap().clone()
    }
    /// Add rules while the server runs (they are tried before older ones).
    pub fn push_front(&self, rule: Rule) {
        self.rules.lock().unwrap().insert(0, rule);
    }
    pub fn bodies(&self, method: &str, path: &str) -> Vec<Value> {
        self.log().into_iter().filter(|r| r.method == method && r.path == path).filter_map(|r| r.body).collect()
    }
}

pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

pub fn not_found(resource: &str, group: &str, name: &str) -> (u16, Value) {
    let qualified = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
    let mut s = status(404, "NotFound", &format!("{qualified} \"{name}\" not found"));
    s["details"] = json!({"name": name, "group": group, "kind": resource});
    (404, s)
}

pub fn conflict(resource: &str, group: &str, name: &str) -> (u16, Value) {
    let mut s = status(
        409,
        "Conflict",
        &format!("Operation cannot be fulfilled on {resource}.{group} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
    );
    s["details"] = json!({"name": name, "group": group, "kind": resource});
    (409, s)
}

pub fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": "1000"}, "items": items})
}

pub fn client(rules: Vec<Rule>) -> (Client, FakeApi) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let fake = FakeApi { rules: Arc::new(Mutex::new(rules)), ..Default::default() };
    let server = fake.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let recorded = Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                body: if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() },
            };
            server.log.lock().unwrap().push(recorded.clone());
            let answer = {
                let mut rules = server.rules.lock().unwrap();
                let found = rules.iter_mut().find(|r| {
                    r.method == recorded.method
                        && (r.path == recorded.path || (r.prefix && recorded.path.starts_with(r.path.as_str())))
                        && r.query.as_ref().is_none_or(|q| recorded.query.contains(q.as_str()))
                        && r.times != Some(0)
                });
                found.map(|r| {
                    if let Some(t) = &mut r.times {
                        *t -= 1;
                    }
                    (r.respond)(&recorded)
                })
            };
            let (code, body) = answer.unwrap_or_else(|| {
                server.unmatched.lock().unwrap().push(recorded.line());
                (404, status(404, "NotFound", &format!("fake API server: no rule for {}", recorded.line())))
            });
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), fake)
}
