//! An in-memory Kubernetes API server behind kube's `Client` (a `tower_test` mock service per
//! client), with the semantics the operator depends on: objects with `uid`,
//! `resourceVersion` (one counter for the store, as etcd's revision), `generation` and
//! `creationTimestamp`; create answers 409 `AlreadyExists`; update and patch carrying a stale
//! `resourceVersion` answer 409 `Conflict`; status subresources (writes to the main resource
//! leave `status` alone, writes to `/status` change only `status`); merge and JSON patches;
//! delete with finalizers sets `deletionTimestamp`; list kinds with a `resourceVersion`; and
//! watches that stream `ADDED`/`MODIFIED`/`DELETED` events after a resourceVersion.
//!
//! Every request is recorded as the RBAC verb and resource it needs, per client. A client
//! can be partitioned: its requests are then held unanswered (a network that drops packets).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// A response body fed by a channel: one chunk for plain answers, a stream for watches.
pub struct ChanBody(mpsc::UnboundedReceiver<Bytes>);

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// One watch event, a line of JSON as the API server streams it.
fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

fn once(bytes: Vec<u8>) -> ChanBody {
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(Bytes::from(bytes));
    ChanBody(rx)
}

/// What RBAC sees of a request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    pub verb: String,
    /// API group ("" for the core group).
    pub group: String,
    /// `leases`, `backups/status`, ...
    pub resource: String,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub client: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub access: Access,
    pub status: Option<u16>,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Key {
    group: String,
    resource: String,
    namespace: Option<String>,
    name: String,
}

struct Watcher {
    group: String,
    resource: String,
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    revision: u64,
    objects: BTreeMap<Key, Value>,
    watchers: Vec<Watcher>,
    log: Vec<Logged>,
    uids: u64,
}

/// Resources served with a status subresource.
const WITH_STATUS: &[&str] = &["backups", "backuppolicies", "restores", "drplans", "deployments", "statefulsets", "pods"];

#[derive(Clone, Default)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
}

struct Parsed {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Parsed> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (r.to_string(), None, None),
        [r, n] => (r.to_string(), Some(n.to_string()), None),
        [r, n, s] => (r.to_string(), Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    Some(Parsed { group, version, namespace, resource, name, sub })
}

fn kind_of(resource: &str) -> String {
    match resource {
        "leases" => "Lease".into(),
        "backups" => "Backup".into(),
        "backuppolicies" => "BackupPolicy".into(),
        "restores" => "Restore".into(),
        "drplans" => "DrPlan".into(),
        "pods" => "Pod".into(),
        "persistentvolumeclaims" => "PersistentVolumeClaim".into(),
        "persistentvolumes" => "PersistentVolume".into(),
        "replicasets" => "ReplicaSet".into(),
        "deployments" => "Deployment".into(),
        "statefulsets" => "StatefulSet".into(),
        "events" => "Event".into(),
        "tridentbackends" => "TridentBackend".into(),
        "configmaps" => "ConfigMap".into(),
        "secrets" => "Secret".into(),
        "services" => "Service".into(),
        other => other.to_string(),
    }
}

pub fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "details": details, "code": code})
}

fn qualified(p: &Parsed) -> String {
    if p.group.is_empty() {
        p.resource.clone()
    } else {
        format!("{}.{}", p.resource, p.group)
    }
}

fn not_found(p: &Parsed, name: &str) -> (u16, Value) {
    (404, status(404, "NotFound", &format!("{} \"{name}\" not found", qualified(p)), json!({"name": name, "group": p.group, "kind": p.resource})))
}

fn conflict(p: &Parsed, name: &str) -> (u16, Value) {
    (
        409,
        status(
            409,
            "Conflict",
            &format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", qualified(p)),
            json!({"name": name, "group": p.group, "kind": p.resource}),
        ),
    )
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn pointer_parent<'a>(doc: &'a mut Value, path: &str) -> Option<(&'a mut Value, String)> {
    let (parent, last) = path.rsplit_once('/')?;
    let last = last.replace("~1", "/").replace("~0", "~");
    Some((doc.pointer_mut(parent)?, last))
}

/// RFC 6902 JSON patch (the operations kube-runtime's finalizer helper sends).
fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let mut work = doc.clone();
    for op in ops.as_array().ok_or("a JSON patch is an array")? {
        let path = op["path"].as_str().ok_or("op without path")?;
        match op["op"].as_str() {
            Some("test") => {
                let found = work.pointer(path).cloned().unwrap_or(Value::Null);
                if found != op["value"] {
                    return Err(format!("test of {path} failed"));
                }
            }
            Some("add") | Some("replace") => {
                let (parent, last) = pointer_parent(&mut work, path).ok_or(format!("no parent for {path}"))?;
                match parent {
                    Value::Object(m) => {
                        m.insert(last, op["value"].clone());
                    }
                    Value::Array(a) if last == "-" => a.push(op["value"].clone()),
                    Value::Array(a) => {
                        let i: usize = last.parse().map_err(|_| format!("bad index in {path}"))?;
                        if op["op"] == "add" {
                            a.insert(i.min(a.len()), op["value"].clone());
                        } else if i < a.len() {
                            a[i] = op["value"].clone();
                        } else {
                            return Err(format!("{path} out of range"));
                        }
                    }
                    Value::Null if last != "-" => {
                        return Err(format!("no parent for {path}"));
                    }
                    _ => return Err(format!("cannot add at {path}")),
                }
            }
            Some("remove") => {
                let (parent, last) = pointer_parent(&mut work, path).ok_or(format!("no parent for {path}"))?;
                match parent {
                    Value::Object(m) => {
                        m.remove(&last).ok_or(format!("{path} does not exist"))?;
                    }
                    Value::Array(a) => {
                        let i: usize = last.parse().map_err(|_| format!("bad index in {path}"))?;
                        if i >= a.len() {
                            return Err(format!("{path} out of range"));
                        }
                        a.remove(i);
                    }
                    _ => return Err(format!("cannot remove {path}")),
                }
            }
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    *doc = work;
    Ok(())
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/"))
    })
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|pair| match pair.split_once('=') {
        Some((k, v)) => obj["metadata"]["labels"][k].as_str() == Some(v),
        None => true,
    })
}

fn verb(method: &str, p: &Parsed, query: &str) -> &'static str {
    match (method, p.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if query_param(query, "watch").as_deref() == Some("true") || query_param(query, "watch").as_deref() == Some("1") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

impl ApiServer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A client of this server; `name` labels its requests in the log.
    pub fn client(&self, name: &str) -> (Client, Partition) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<ChanBody>>();
        let partition = Partition(Arc::new(AtomicBool::new(false)));
        let server = self.clone();
        let (name, cut) = (name.to_string(), partition.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                if cut.0.load(Ordering::SeqCst) {
                    // Never answered: the client sees a request that hangs.
                    held.push(send);
                    continue;
                }
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let response = server.handle(&name, parts.method.as_str(), parts.uri.path(), parts.uri.query().unwrap_or(""), &content_type, &bytes);
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), partition)
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Put an object into the store as-is (with fresh metadata), as `kubectl apply` would have.
    pub fn seed(&self, path: &str, mut obj: Value) -> Value {
        let p = parse_path(path).expect("a collection path");
        let name = obj["metadata"]["name"].as_str().expect("metadata.name").to_string();
        let mut s = self.state.lock().unwrap();
        s.revision += 1;
        s.uids += 1;
        let (rev, uid) = (s.revision, s.uids);
        obj["metadata"]["resourceVersion"] = json!(rev.to_string());
        obj["metadata"]["uid"] = json!(format!("6f1c2e7a-0000-4000-8000-{uid:012x}"));
        obj["metadata"]["creationTimestamp"] = json!("2026-11-20T08:00:00Z");
        obj["metadata"]["generation"] = json!(1);
        if let Some(ns) = &p.namespace {
            obj["metadata"]["namespace"] = json!(ns);
        }
        let key = Key { group: p.group.clone(), resource: p.resource.clone(), namespace: p.namespace.clone(), name };
        s.objects.insert(key.clone(), obj.clone());
        Self::notify(&mut s, &key, "ADDED", &obj);
        obj
    }

    /// The stored object, if any.
    pub fn get(&self, path: &str) -> Option<Value> {
        let p = parse_path(path)?;
        let key = Key { group: p.group, resource: p.resource, namespace: p.namespace, name: p.name? };
        self.state.lock().unwrap().objects.get(&key).cloned()
    }

    /// Objects of a collection path (`/apis/stasis.io/v1alpha1/namespaces/shop/backups`).
    pub fn list(&self, path: &str) -> Vec<Value> {
        let p = parse_path(path).expect("a collection path");
        let s = self.state.lock().unwrap();
        s.objects.iter().filter(|(k, _)| k.group == p.group && k.resource == p.resource && (p.namespace.is_none() || k.namespace == p.namespace)).map(|(_, v)| v.clone()).collect()
    }

    fn notify(s: &mut State, key: &Key, kind: &str, obj: &Value) {
        let line = event_line(kind, obj);
        s.watchers.retain(|w| {
            if w.group != key.group || w.resource != key.resource || (w.namespace.is_some() && w.namespace != key.namespace) {
                return !w.tx.is_closed();
            }
            w.tx.send(line.clone()).is_ok()
        });
    }

    fn respond(code: u16, body: &Value) -> Response<ChanBody> {
        Response::builder().status(code).header("content-type", "application/json").body(once(serde_json::to_vec(body).unwrap())).unwrap()
    }

    /// Record a request served outside [`ApiServer::handle`] (a port-forward upgrade, a log)
    /// as the RBAC verb the API server authorizes it with.
    pub fn note(&self, client: &str, method: &str, path: &str, query: &str, verb: &str, status: u16) {
        let Some(p) = parse_path(path) else { return };
        let resource = match &p.sub {
            Some(sub) => format!("{}/{sub}", p.resource),
            None => p.resource.clone(),
        };
        let access = Access { verb: verb.to_string(), group: p.group.clone(), resource };
        self.state.lock().unwrap().log.push(Logged { client: client.into(), method: method.into(), path: path.into(), query: query.into(), access, status: Some(status) });
    }

    /// Change a stored object as a controller would (status, binding): a new resourceVersion
    /// and a MODIFIED event. Returns false if there is no such object.
    pub fn update(&self, path: &str, change: impl FnOnce(&mut Value)) -> bool {
        let Some(p) = parse_path(path) else { return false };
        let Some(name) = p.name else { return false };
        let key = Key { group: p.group, resource: p.resource, namespace: p.namespace, name };
        let mut s = self.state.lock().unwrap();
        let Some(mut obj) = s.objects.get(&key).cloned() else { return false };
        change(&mut obj);
        s.revision += 1;
        obj["metadata"]["resourceVersion"] = json!(s.revision.to_string());
        s.objects.insert(key.clone(), obj.clone());
        Self::notify(&mut s, &key, "MODIFIED", &obj);
        true
    }

    /// Serve one request (what [`ApiServer::client`] does per request), for an HTTP front.
    pub fn handle(&self, client: &str, method: &str, path: &str, query: &str, content_type: &str, body: &[u8]) -> Response<ChanBody> {
        let Some(p) = parse_path(path) else {
            return Self::respond(404, &status(404, "NotFound", &format!("the server could not find the requested resource ({path})"), json!({})));
        };
        let verb = verb(method, &p, query);
        let resource = match &p.sub {
            Some(sub) => format!("{}/{sub}", p.resource),
            None => p.resource.clone(),
        };
        let access = Access { verb: verb.to_string(), group: p.group.clone(), resource };
        let mut s = self.state.lock().unwrap();
        s.log.push(Logged { client: client.into(), method: method.into(), path: path.into(), query: query.into(), access, status: None });
        let index = s.log.len() - 1;
        if verb == "watch" {
            let from: u64 = query_param(query, "resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
            let (tx, rx) = mpsc::unbounded_channel();
            // Objects changed after `from` are sent as their current state (a compacting
            // store's history); then live events.
            let changed: Vec<Value> = s
                .objects
                .iter()
                .filter(|(k, _)| k.group == p.group && k.resource == p.resource && (p.namespace.is_none() || k.namespace == p.namespace))
                .map(|(_, v)| v.clone())
                .filter(|v| v["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse::<u64>().ok()).unwrap_or(0) > from)
                .collect();
            for obj in changed {
                let _ = tx.send(event_line("MODIFIED", &obj));
            }
            s.watchers.push(Watcher { group: p.group.clone(), resource: p.resource.clone(), namespace: p.namespace.clone(), tx });
            s.log[index].status = Some(200);
            return Response::builder().status(200).header("content-type", "application/json").body(ChanBody(rx)).unwrap();
        }
        let (code, answer) = Self::apply(&mut s, &p, verb, query, content_type, body);
        s.log[index].status = Some(code);
        Self::respond(code, &answer)
    }

    /// The `scale` subresource of a Deployment or StatefulSet: an `autoscaling/v1` Scale that
    /// reads and writes only `spec.replicas` (a write bumps the workload's generation).
    fn scale(s: &mut State, p: &Parsed, verb: &str, input: &Value) -> (u16, Value) {
        let name = p.name.clone().unwrap_or_default();
        let key = Key { group: p.group.clone(), resource: p.resource.clone(), namespace: p.namespace.clone(), name: name.clone() };
        let Some(mut obj) = s.objects.get(&key).cloned() else { return not_found(p, &name) };
        let as_scale = |o: &Value| {
            let selector = o.pointer("/spec/selector/matchLabels").and_then(Value::as_object).map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")).unwrap_or_default();
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                   "metadata": {"name": o["metadata"]["name"], "namespace": o["metadata"]["namespace"], "uid": o["metadata"]["uid"], "resourceVersion": o["metadata"]["resourceVersion"], "creationTimestamp": o["metadata"]["creationTimestamp"]},
                   "spec": {"replicas": o.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
                   "status": {"replicas": o.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector}})
        };
        match verb {
            "get" => (200, as_scale(&obj)),
            "update" | "patch" => {
                if let Some(rv) = input.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                    if Some(rv) != obj["metadata"]["resourceVersion"].as_str() {
                        return conflict(p, &name);
                    }
                }
                let Some(replicas) = input.pointer("/spec/replicas").and_then(Value::as_i64) else {
                    return (422, status(422, "Invalid", "Scale.autoscaling \"spec.replicas\" is required", json!({})));
                };
                if obj.pointer("/spec/replicas").and_then(Value::as_i64) != Some(replicas) {
                    obj["spec"]["replicas"] = json!(replicas);
                    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    obj["metadata"]["generation"] = json!(generation);
                    s.revision += 1;
                    obj["metadata"]["resourceVersion"] = json!(s.revision.to_string());
                    s.objects.insert(key.clone(), obj.clone());
                    Self::notify(s, &key, "MODIFIED", &obj);
                }
                (200, as_scale(&obj))
            }
            other => (405, status(405, "MethodNotAllowed", &format!("{other} is not supported on scale"), json!({}))),
        }
    }

    fn apply(s: &mut State, p: &Parsed, verb: &str, query: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let api_version = if p.group.is_empty() { p.version.clone() } else { format!("{}/{}", p.group, p.version) };
        if p.sub.as_deref() == Some("scale") {
            let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            return Self::scale(s, p, verb, &input);
        }
        let with_status = WITH_STATUS.contains(&p.resource.as_str());
        let input: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(body).unwrap_or(Value::Null) };
        match verb {
            "list" => {
                let selector = query_param(query, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|(k, _)| k.group == p.group && k.resource == p.resource && (p.namespace.is_none() || k.namespace == p.namespace))
                    .map(|(_, v)| v.clone())
                    .filter(|v| labels_match(v, &selector))
                    .collect();
                (200, json!({"kind": format!("{}List", kind_of(&p.resource)), "apiVersion": api_version, "metadata": {"resourceVersion": s.revision.to_string()}, "items": items}))
            }
            "get" => {
                let name = p.name.clone().unwrap();
                let key = Key { group: p.group.clone(), resource: p.resource.clone(), namespace: p.namespace.clone(), name: name.clone() };
                match s.objects.get(&key) {
                    Some(o) => (200, o.clone()),
                    None => not_found(p, &name),
                }
            }
            "create" => {
                let mut obj = input;
                let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
                if name.is_empty() {
                    return (422, status(422, "Invalid", &format!("{} is invalid: metadata.name: Required value", kind_of(&p.resource)), json!({})));
                }
                let key = Key { group: p.group.clone(), resource: p.resource.clone(), namespace: p.namespace.clone(), name: name.clone() };
                if s.objects.contains_key(&key) {
                    return (409, status(409, "AlreadyExists", &format!("{} \"{name}\" already exists", qualified(p)), json!({"name": name, "group": p.group, "kind": p.resource})));
                }
                s.revision += 1;
                s.uids += 1;
                obj["apiVersion"] = json!(api_version);
                obj["kind"] = json!(kind_of(&p.resource));
                let meta = obj["metadata"].as_object_mut().unwrap();
                meta.insert("resourceVersion".into(), json!(s.revision.to_string()));
                meta.insert("uid".into(), json!(format!("0c1d2e3f-0000-4000-8000-{:012x}", s.uids)));
                meta.insert("creationTimestamp".into(), json!(k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).unwrap().to_string()));
                meta.insert("generation".into(), json!(1));
                if let Some(ns) = &p.namespace {
                    meta.insert("namespace".into(), json!(ns));
                }
                if with_status {
                    obj.as_object_mut().unwrap().remove("status");
                }
                s.objects.insert(key.clone(), obj.clone());
                Self::notify(s, &key, "ADDED", &obj);
                (201, obj)
            }
            "update" | "patch" => {
                let name = p.name.clone().unwrap();
                let key = Key { group: p.group.clone(), resource: p.resource.clone(), namespace: p.namespace.clone(), name: name.clone() };
                let Some(current) = s.objects.get(&key).cloned() else { return not_found(p, &name) };
                let mut next = current.clone();
                if verb == "update" {
                    next = input.clone();
                } else if content_type.contains("json-patch") {
                    if let Err(e) = json_patch(&mut next, &input) {
                        return (422, status(422, "Invalid", &format!("the JSON patch failed: {e}"), json!({})));
                    }
                } else if content_type.contains("merge-patch") {
                    merge_patch(&mut next, &input);
                } else {
                    return (415, status(415, "UnsupportedMediaType", &format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json (got {content_type})"), json!({})));
                }
                // Optimistic concurrency: a resourceVersion in the request must be the current one.
                let sent_rv = if verb == "update" { input["metadata"]["resourceVersion"].as_str() } else { input.pointer("/metadata/resourceVersion").and_then(|v| v.as_str()) };
                if let Some(rv) = sent_rv {
                    if Some(rv) != current["metadata"]["resourceVersion"].as_str() {
                        return conflict(p, &name);
                    }
                }
                // Subresource rules: `/status` changes only status; the main resource never does.
                let mut stored = current.clone();
                if p.sub.as_deref() == Some("status") {
                    stored["status"] = next["status"].clone();
                } else {
                    for (k, v) in next.as_object().unwrap() {
                        if k == "status" && with_status {
                            continue;
                        }
                        if k == "metadata" {
                            for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                                match v.get(field) {
                                    Some(x) => stored["metadata"][field] = x.clone(),
                                    None => {
                                        stored["metadata"].as_object_mut().unwrap().remove(field);
                                    }
                                }
                            }
                            continue;
                        }
                        stored[k] = v.clone();
                    }
                    if !with_status && next.get("status").is_none() {
                        stored.as_object_mut().unwrap().remove("status");
                    }
                    if stored.get("spec") != current.get("spec") {
                        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                        stored["metadata"]["generation"] = json!(generation);
                    }
                }
                if stored == current {
                    return (200, current);
                }
                s.revision += 1;
                stored["metadata"]["resourceVersion"] = json!(s.revision.to_string());
                let finalizers_empty = stored["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
                if stored["metadata"].get("deletionTimestamp").is_some() && finalizers_empty {
                    s.objects.remove(&key);
                    Self::notify(s, &key, "DELETED", &stored);
                } else {
                    s.objects.insert(key.clone(), stored.clone());
                    Self::notify(s, &key, "MODIFIED", &stored);
                }
                (200, stored)
            }
            "delete" => {
                let name = p.name.clone().unwrap();
                let key = Key { group: p.group.clone(), resource: p.resource.clone(), namespace: p.namespace.clone(), name: name.clone() };
                let Some(mut obj) = s.objects.get(&key).cloned() else { return not_found(p, &name) };
                s.revision += 1;
                obj["metadata"]["resourceVersion"] = json!(s.revision.to_string());
                if obj["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()) {
                    if obj["metadata"].get("deletionTimestamp").is_none() {
                        obj["metadata"]["deletionTimestamp"] = json!(k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).unwrap().to_string());
                        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                    }
                    s.objects.insert(key.clone(), obj.clone());
                    Self::notify(s, &key, "MODIFIED", &obj);
                    (200, obj)
                } else {
                    s.objects.remove(&key);
                    Self::notify(s, &key, "DELETED", &obj);
                    (200, obj)
                }
            }
            other => (405, status(405, "MethodNotAllowed", &format!("{other} is not supported by this fake"), json!({}))),
        }
    }
}

/// Cut or heal one client's link to the API server.
#[derive(Clone)]
pub struct Partition(Arc<AtomicBool>);

impl Partition {
    pub fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn heal(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
