//! Request bodies: ONTAP takes nested objects and dotted keys alike
//! (`{"restore_to": {"snapshot": {"name": "s"}}}` == `{"restore_to.snapshot.name": "s"}`),
//! so a body is flattened to dotted paths first. Handlers take the fields they model; what
//! is left is checked against the documented fields of the resource.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fields::{is_documented, Resource};
use crate::error::{ErrorKind, OntapError, SimResult};

/// Largest request body the ONTAP API accepts.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

pub struct Body {
    resource: Resource,
    fields: BTreeMap<String, Value>,
}

pub fn parse_json(bytes: &[u8]) -> SimResult<Value> {
    if bytes.len() > BODY_BYTES_MAX {
        return Err(OntapError::new(ErrorKind::TooLarge, 262199, format!("The request body is larger than the {BODY_BYTES_MAX} bytes allowed.")));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(bytes).map_err(|e| OntapError::new(ErrorKind::Invalid, 262198, format!("Invalid JSON input in the request body: {e}.")))
}

fn flatten(prefix: &str, value: Value, out: &mut BTreeMap<String, Value>) -> SimResult<()> {
    match value {
        // An empty object (`{"nas": {}}`) sets nothing; stored as a value it would replace
        // the modelled object when read back.
        Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
                flatten(&path, child, out)?;
            }
            Ok(())
        }
        other => {
            if out.insert(prefix.to_string(), other).is_some() {
                return Err(OntapError::invalid_field(prefix, format!("Field \"{prefix}\" is given twice.")));
            }
            Ok(())
        }
    }
}

impl Body {
    pub fn new(resource: Resource, value: Value) -> SimResult<Body> {
        if !value.is_object() {
            return Err(OntapError::new(ErrorKind::Invalid, 262198, "The request body must be a JSON object."));
        }
        let mut fields = BTreeMap::new();
        flatten("", value, &mut fields)?;
        Ok(Body { resource, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.fields.keys().any(|k| k == path || k.starts_with(&format!("{path}.")))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.fields.keys()
    }

    pub fn take(&mut self, path: &str) -> Option<Value> {
        self.fields.remove(path).filter(|v| !v.is_null())
    }

    pub fn take_str(&mut self, path: &str) -> SimResult<Option<String>> {
        match self.take(path) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(OntapError::invalid_field(path, format!("Field \"{path}\" must be a string, not {other}."))),
        }
    }

    pub fn require_str(&mut self, path: &str) -> SimResult<String> {
        self.take_str(path)?.ok_or_else(|| OntapError::missing_field(path))
    }

    /// Sizes and counts: ONTAP accepts JSON numbers (and numeric strings).
    pub fn take_u64(&mut self, path: &str) -> SimResult<Option<u64>> {
        match self.take(path) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| OntapError::invalid_field(path, format!("Field \"{path}\" must be a non-negative integer."))),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| OntapError::invalid_field(path, format!("Field \"{path}\" must be a non-negative integer."))),
            Some(other) => Err(OntapError::invalid_field(path, format!("Field \"{path}\" must be a number, not {other}."))),
        }
    }

    pub fn take_bool(&mut self, path: &str) -> SimResult<Option<bool>> {
        match self.take(path) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(other) => Err(OntapError::invalid_field(path, format!("Field \"{path}\" must be a boolean, not {other}."))),
        }
    }

    /// `{prefix}.name` / `{prefix}.uuid` of a referenced object.
    pub fn take_selector(&mut self, prefix: &str) -> SimResult<crate::model::cluster::Selector> {
        Ok(crate::model::cluster::Selector { name: self.take_str(&format!("{prefix}.name"))?, uuid: self.take_str(&format!("{prefix}.uuid"))? })
    }

    /// An array of `{name, uuid}` references, e.g. `aggregates` or `volumes`.
    pub fn take_selectors(&mut self, path: &str) -> SimResult<Vec<crate::model::cluster::Selector>> {
        match self.take(path) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| {
                    let mut inner = Body::new(self.resource, item).map_err(|_| OntapError::invalid_field(path, format!("Each entry of \"{path}\" must be an object.")))?;
                    let sel = crate::model::cluster::Selector { name: inner.take_str("name")?, uuid: inner.take_str("uuid")? };
                    if let Some(extra) = inner.fields.keys().next() {
                        return Err(OntapError::unknown_field(&format!("{path}.{extra}")));
                    }
                    Ok(sel)
                })
                .collect(),
            Some(_) => Err(OntapError::invalid_field(path, format!("Field \"{path}\" must be an array."))),
        }
    }

    /// Everything not taken must be unknown (an error) or read-only (an error) or a
    /// documented, settable field the simulator does not model: those are returned so the
    /// caller can store them and read them back unchanged, as idempotent tools expect.
    pub fn finish(self, read_only: &[&str]) -> SimResult<BTreeMap<String, Value>> {
        for key in self.fields.keys() {
            if !is_documented(self.resource, key) {
                return Err(OntapError::unknown_field(key));
            }
            if read_only.iter().any(|ro| key == ro || key.starts_with(&format!("{ro}."))) {
                return Err(OntapError::read_only_field(key));
            }
        }
        Ok(self.fields)
    }

    /// For operations that model every settable field: anything left is an error.
    pub fn finish_strict(self) -> SimResult<()> {
        match self.fields.keys().next() {
            None => Ok(()),
            Some(key) if is_documented(self.resource, key) => Err(OntapError::read_only_field(key)),
            Some(key) => Err(OntapError::unknown_field(key)),
        }
    }
}

/// Put a dotted-path map back into nested JSON (for reading stored fields back).
pub fn unflatten_into(target: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            target.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let child = target.entry(head.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            unflatten_into(child.as_object_mut().expect("made an object"), rest, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_and_nested_keys_are_the_same() {
        let mut a = Body::new(Resource::Volume, json!({"restore_to": {"snapshot": {"name": "s1"}}})).unwrap();
        let mut b = Body::new(Resource::Volume, json!({"restore_to.snapshot.name": "s1"})).unwrap();
        assert_eq!(a.take_str("restore_to.snapshot.name").unwrap().as_deref(), Some("s1"));
        assert_eq!(b.take_str("restore_to.snapshot.name").unwrap().as_deref(), Some("s1"));
    }

    #[test]
    fn leftovers_are_classified() {
        let body = Body::new(Resource::Volume, json!({"no_such_field": 1})).unwrap();
        let err = body.finish(&["uuid"]).unwrap_err();
        assert_eq!((err.code, err.target.as_deref()), (2, Some("no_such_field")));
        let body = Body::new(Resource::Volume, json!({"uuid": "x"})).unwrap();
        let err = body.finish(&["uuid"]).unwrap_err();
        assert_eq!((err.code, err.target.as_deref()), (2, Some("uuid")));
        let body = Body::new(Resource::Volume, json!({"language": "c.utf_8"})).unwrap();
        assert_eq!(body.finish(&["uuid"]).unwrap().get("language"), Some(&json!("c.utf_8")));
    }

    #[test]
    fn bad_json_and_types_are_errors() {
        assert_eq!(parse_json(b"{not json").unwrap_err().kind, ErrorKind::Invalid);
        assert_eq!(parse_json(&vec![b' '; BODY_BYTES_MAX + 1]).unwrap_err().kind, ErrorKind::TooLarge);
        let mut body = Body::new(Resource::Volume, json!({"size": "big"})).unwrap();
        assert_eq!(body.take_u64("size").unwrap_err().target.as_deref(), Some("size"));
    }
}
