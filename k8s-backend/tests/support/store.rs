//! A small object store behind the fake API server, answering as the real one does for
//! get, list, create and delete of core and apps/v1 objects: created objects gain uid,
//! resourceVersion, creationTimestamp (and generation for workloads); a create of an
//! existing name is 409 AlreadyExists; a get or delete of a missing name is 404 NotFound.
//! `on_create` hooks play the controllers (PV binding, Trident's import, a Deployment
//! becoming Ready).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{rule_prefix, status, Recorded, Rule};

type Hook = Box<dyn Fn(&mut BTreeMap<String, Value>, &str, &mut Value) + Send + Sync>;

#[derive(Clone, Default)]
pub struct Store {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    hooks: Arc<Mutex<Vec<Hook>>>,
    next_rv: Arc<Mutex<u64>>,
}

/// (kind, apiVersion, group) of a collection by its plural.
fn kind_of(plural: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match plural {
        "configmaps" => ("ConfigMap", "v1", ""),
        "secrets" => ("Secret", "v1", ""),
        "services" => ("Service", "v1", ""),
        "persistentvolumeclaims" => ("PersistentVolumeClaim", "v1", ""),
        "persistentvolumes" => ("PersistentVolume", "v1", ""),
        "pods" => ("Pod", "v1", ""),
        "deployments" => ("Deployment", "apps/v1", "apps"),
        "statefulsets" => ("StatefulSet", "apps/v1", "apps"),
        _ => return None,
    })
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Store {
    /// Put an object at `collection` (e.g. `/api/v1/namespaces/shop/configmaps`) as is.
    pub fn put(&self, collection: &str, object: Value) {
        let name = object["metadata"]["name"].as_str().expect("object has a name").to_string();
        self.objects.lock().unwrap().insert(format!("{collection}/{name}"), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    pub fn paths(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// A hook called on every create, with the store, the collection and the new object.
    pub fn on_create(&self, hook: impl Fn(&mut BTreeMap<String, Value>, &str, &mut Value) + Send + Sync + 'static) {
        self.hooks.lock().unwrap().push(Box::new(hook));
    }

    fn answer(&self, r: &Recorded) -> (u16, Value) {
        let mut objects = self.objects.lock().unwrap();
        match r.method.as_str() {
            "GET" => {
                if let Some(o) = objects.get(&r.path) {
                    return (200, o.clone());
                }
                let (parent, last) = split(&r.path);
                if let Some((kind, api_version, _)) = kind_of(last) {
                    let prefix = format!("{}/", r.path);
                    let items: Vec<Value> = objects.iter().filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/')).map(|(_, v)| v.clone()).collect();
                    return (200, json!({"kind": format!("{kind}List"), "apiVersion": api_version, "metadata": {"resourceVersion": "1000"}, "items": items}));
                }
                not_found(split(parent).1, last)
            }
            "POST" => {
                let Some(mut body) = r.body.clone() else { return (400, status(400, "BadRequest", "no body")) };
                let name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let path = format!("{}/{name}", r.path);
                let plural = split(&r.path).1;
                let (_, _, group) = kind_of(plural).unwrap_or(("", "", ""));
                if objects.contains_key(&path) {
                    let qualified = if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") };
                    let mut s = status(409, "AlreadyExists", &format!("{qualified} \"{name}\" already exists"));
                    s["details"] = json!({"name": name, "group": group, "kind": plural});
                    return (409, s);
                }
                let mut rv = self.next_rv.lock().unwrap();
                *rv += 1;
                body["metadata"]["uid"] = json!(format!("7f3c2a1b-0000-4000-8000-{:012x}", *rv));
                body["metadata"]["resourceVersion"] = json!(format!("{}", 5000 + *rv));
                body["metadata"]["creationTimestamp"] = json!("2026-11-25T10:00:00Z");
                if group == "apps" {
                    body["metadata"]["generation"] = json!(1);
                }
                for hook in self.hooks.lock().unwrap().iter() {
                    hook(&mut objects, &r.path, &mut body);
                }
                objects.insert(path, body.clone());
                (201, body)
            }
            "DELETE" => match objects.remove(&r.path) {
                Some(o) => (200, o),
                None => {
                    let (parent, name) = split(&r.path);
                    not_found(split(parent).1, name)
                }
            },
            _ => (405, status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")),
        }
    }

    /// Rules serving the store under the core and apps/v1 groups; put them after any more
    /// specific rule (pods, scale) since the first matching rule answers.
    pub fn rules(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        for method in ["GET", "POST", "DELETE"] {
            for prefix in ["/api/v1/", "/apis/apps/v1/"] {
                let me = self.clone();
                out.push(rule_prefix(method, prefix, move |r| me.answer(r)));
            }
        }
        out
    }
}

fn not_found(plural: &str, name: &str) -> (u16, Value) {
    let group = kind_of(plural).map(|k| k.2).unwrap_or("");
    let qualified = if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") };
    let mut s = status(404, "NotFound", &format!("{qualified} \"{name}\" not found"));
    s["details"] = json!({"name": name, "group": group, "kind": plural});
    (404, s)
}
