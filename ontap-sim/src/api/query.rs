//! ONTAP query parameters: parsing, filtering, ordering, paging and field projection.
//!
//! Pure functions over `serde_json::Value`: handlers build the FULL representation of each
//! record (everything modelled, `_links.self.href` included) and this module decides what a
//! request gets to see, the same way for every resource.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{json, Map, Value};
use url::form_urlencoded;

use crate::api::fields::{is_documented, Resource};
use crate::error::{ErrorKind, OntapError, SimResult};

/// The paging cursor is the plain query parameter `start.<key>=<value>` (e.g. `start.uuid`):
/// resume after the record whose key field has that value.
pub const CURSOR_PREFIX: &str = "start.";

/// ONTAP's answer to a query or `fields` entry naming a field the resource does not have.
pub const UNEXPECTED_ARGUMENT: u64 = 262179;

/// A parsed ONTAP query string.
#[derive(Debug, Clone, PartialEq)]
pub struct OntapQuery {
    /// `fields=a,b.c` entries in request order (`*` and `**` kept verbatim); `None` if absent.
    pub fields: Option<Vec<String>>,
    /// Every parameter that is not reserved nor an operation parameter: all must match.
    pub filters: Vec<Filter>,
    /// `order_by=a desc,b`, in priority order.
    pub order_by: Vec<OrderBy>,
    /// `max_records` (at least 1).
    pub max_records: Option<usize>,
    /// `return_records=false` asks for `num_records` only; defaults to true.
    pub return_records: bool,
    /// `return_timeout` in seconds (0..=120); `None` lets each operation apply its default.
    pub return_timeout_s: Option<u64>,
    /// The paging cursor from `start.<key>=<value>`.
    pub start: Option<Cursor>,
    /// Parameters the caller declared as operation parameters (e.g.
    /// `restore_to.snapshot.name`), decoded, in request order.
    pub operation: Vec<(String, String)>,
    /// Every decoded parameter in request order; `_links.next` repeats them.
    pub raw: Vec<(String, String)>,
    /// The query string as received (still percent-encoded), for `_links.self`.
    pub query_string: String,
}

impl Default for OntapQuery {
    fn default() -> Self {
        OntapQuery {
            fields: None,
            filters: Vec::new(),
            order_by: Vec::new(),
            max_records: None,
            return_records: true,
            return_timeout_s: None,
            start: None,
            operation: Vec::new(),
            raw: Vec::new(),
            query_string: String::new(),
        }
    }
}

/// Where a paged listing resumes: after the record whose `field` equals `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub field: String,
    pub value: String,
}

/// One `path=value` filter; it matches if any alternative (`a|b`) does.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub path: String,
    pub alternatives: Vec<Alternative>,
}

/// One `|`-separated alternative of a filter value, optionally negated by a leading `!`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    pub negated: bool,
    pub test: Test,
}

/// What an alternative tests a field value against.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// `null`: the field is absent or null.
    Null,
    Eq(String),
    /// A value with `*` wildcards, matched case-insensitively.
    Glob(String),
    Lt(String),
    Le(String),
    Gt(String),
    Ge(String),
    /// `a..b`, inclusive; an empty side is unbounded.
    Range(String, String),
}

/// One `order_by` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    pub path: String,
    pub descending: bool,
}

fn unexpected_argument(name: &str) -> OntapError {
    OntapError::new(
        ErrorKind::Invalid,
        UNEXPECTED_ARGUMENT,
        format!("Unexpected argument \"{name}\"."),
    )
    .with_target(name)
}

fn invalid_value(param: &str, value: &str, expected: &str) -> OntapError {
    OntapError::invalid_field(
        param,
        format!("The value \"{value}\" is invalid for field \"{param}\" ({expected})."),
    )
}

impl OntapQuery {
    /// Parses a raw (percent-encoded) query string for `resource`. Names in
    /// `operation_params` go to [`OntapQuery::operation`]; every other non-reserved name is
    /// a filter and must be a documented field of `resource`.
    pub fn parse(
        raw_query: Option<&str>,
        resource: Resource,
        operation_params: &[&str],
    ) -> SimResult<OntapQuery> {
        let query_string = raw_query.unwrap_or_default().to_string();
        let raw: Vec<(String, String)> = form_urlencoded::parse(query_string.as_bytes())
            .into_owned()
            .collect();
        let mut q = OntapQuery {
            query_string,
            ..OntapQuery::default()
        };
        for (name, value) in &raw {
            match name.as_str() {
                "fields" => {
                    for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                        if !matches!(field, "*" | "**") && !is_documented(resource, field) {
                            return Err(unexpected_argument(field));
                        }
                        q.fields
                            .get_or_insert_with(Vec::new)
                            .push(field.to_string());
                    }
                }
                "max_records" => {
                    // 0 would page forever: every next link would repeat the same cursor.
                    let n = value.parse::<usize>().ok().filter(|n| *n > 0);
                    q.max_records =
                        Some(n.ok_or_else(|| invalid_value(name, value, "<integer >= 1>"))?);
                }
                "return_records" => {
                    q.return_records = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(invalid_value(name, value, "<boolean>")),
                    };
                }
                "return_timeout" => {
                    let t = value.parse::<u64>().ok().filter(|t| *t <= 120);
                    q.return_timeout_s =
                        Some(t.ok_or_else(|| invalid_value(name, value, "<integer 0..120>"))?);
                }
                "order_by" => q.order_by.extend(parse_order_by(value, resource)?),
                n if operation_params.contains(&n) => {
                    q.operation.push((name.clone(), value.clone()))
                }
                n => match n.strip_prefix(CURSOR_PREFIX) {
                    Some(field) => {
                        q.start = Some(Cursor {
                            field: field.to_string(),
                            value: value.clone(),
                        })
                    }
                    None if is_documented(resource, n) => q.filters.push(Filter::parse(n, value)),
                    None => return Err(unexpected_argument(n)),
                },
            }
        }
        q.raw = raw;
        Ok(q)
    }

    /// The field paths the filters name; ONTAP includes them in the records it returns.
    pub fn filter_paths(&self) -> Vec<String> {
        self.filters.iter().map(|f| f.path.clone()).collect()
    }
}

fn parse_order_by(value: &str, resource: Resource) -> SimResult<Vec<OrderBy>> {
    let mut keys = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let mut words = item.split_whitespace();
        let path = words.next().unwrap_or_default();
        let descending = match words.next().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => return Err(invalid_value("order_by", value, "<field> [asc|desc]")),
        };
        if words.next().is_some() {
            return Err(invalid_value("order_by", value, "<field> [asc|desc]"));
        }
        if !is_documented(resource, path) {
            return Err(unexpected_argument(path));
        }
        keys.push(OrderBy {
            path: path.to_string(),
            descending,
        });
    }
    Ok(keys)
}

// ---------------------------------------------------------------------------------------------
// Filtering

impl Filter {
    /// Parses an ONTAP filter value: `a|b` (or), `!x` (not), `<x <=x >x >=x`, `a..b`,
    /// `*` wildcards, `null`.
    pub fn parse(path: &str, value: &str) -> Filter {
        let alternatives = value
            .split('|')
            .map(|alt| {
                let (negated, alt) = match alt.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, alt),
                };
                let test = if alt == "null" {
                    Test::Null
                } else if let Some(v) = alt.strip_prefix("<=") {
                    Test::Le(v.to_string())
                } else if let Some(v) = alt.strip_prefix(">=") {
                    Test::Ge(v.to_string())
                } else if let Some(v) = alt.strip_prefix('<') {
                    Test::Lt(v.to_string())
                } else if let Some(v) = alt.strip_prefix('>') {
                    Test::Gt(v.to_string())
                } else if let Some((lo, hi)) = alt.split_once("..") {
                    Test::Range(lo.to_string(), hi.to_string())
                } else if alt.contains('*') {
                    Test::Glob(alt.to_string())
                } else {
                    Test::Eq(alt.to_string())
                };
                Alternative { negated, test }
            })
            .collect();
        Filter {
            path: path.to_string(),
            alternatives,
        }
    }

    pub fn matches(&self, record: &Value) -> bool {
        let segments: Vec<&str> = self.path.split('.').collect();
        let mut values = Vec::new();
        leaves(record, &segments, &mut values);
        self.alternatives
            .iter()
            .any(|alt| alt.negated != alt.test.matches_any(&values))
    }
}

/// True if `record` matches every filter.
pub fn filter_matches(record: &Value, filters: &[Filter]) -> bool {
    filters.iter().all(|f| f.matches(record))
}

/// Collects the values at `path`, going through arrays at every level (and flattening an
/// array found at the end), so `aggregates.name` yields every aggregate's name.
fn leaves<'a>(value: &'a Value, path: &[&str], out: &mut Vec<&'a Value>) {
    match (value, path.split_first()) {
        (Value::Array(items), _) => items.iter().for_each(|i| leaves(i, path, out)),
        (_, None) => out.push(value),
        (Value::Object(map), Some((head, rest))) => {
            if let Some(child) = map.get(*head) {
                leaves(child, rest, out);
            }
        }
        _ => {}
    }
}

impl Test {
    /// Over all the values a path reaches: `null` holds when none is set; any other test
    /// when some value passes it. Negation applies to that, so `aggregates.name=!aggr1`
    /// means "on no aggregate named aggr1".
    fn matches_any(&self, values: &[&Value]) -> bool {
        match self {
            Test::Null => values.iter().all(|v| v.is_null()),
            _ => values.iter().any(|v| !v.is_null() && self.matches_one(v)),
        }
    }

    fn matches_one(&self, v: &Value) -> bool {
        let cmp = |s: &str| compare_to_query(v, s);
        match self {
            Test::Null => v.is_null(),
            Test::Eq(s) => cmp(s) == Some(Ordering::Equal),
            Test::Glob(pattern) => scalar_text(v).is_some_and(|t| glob_matches(pattern, &t)),
            Test::Lt(s) => cmp(s) == Some(Ordering::Less),
            Test::Le(s) => matches!(cmp(s), Some(Ordering::Less | Ordering::Equal)),
            Test::Gt(s) => cmp(s) == Some(Ordering::Greater),
            Test::Ge(s) => matches!(cmp(s), Some(Ordering::Greater | Ordering::Equal)),
            Test::Range(lo, hi) => {
                (lo.is_empty() || matches!(cmp(lo), Some(Ordering::Greater | Ordering::Equal)))
                    && (hi.is_empty() || matches!(cmp(hi), Some(Ordering::Less | Ordering::Equal)))
            }
        }
    }
}

/// A number kept exact where it is an integer: sizes exceed f64's 53-bit mantissa.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn parse(s: &str) -> Option<Num> {
        if let Ok(i) = s.parse::<i128>() {
            return Some(Num::Int(i));
        }
        // f64's parser also takes "inf" and "NaN", which are names here, not numbers.
        let numeric = s.bytes().any(|b| b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
        numeric.then(|| s.parse().ok().map(Num::Float)).flatten()
    }

    fn of(n: &serde_json::Number) -> Num {
        n.as_i64()
            .map(|i| Num::Int(i.into()))
            .or_else(|| n.as_u64().map(|u| Num::Int(u.into())))
            .unwrap_or_else(|| Num::Float(n.as_f64().unwrap_or(f64::NAN)))
    }

    fn cmp(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Compares a record value with a query value: numerically when both are numbers,
/// `true`/`false` for booleans, as strings otherwise; `None` when incomparable.
fn compare_to_query(v: &Value, query: &str) -> Option<Ordering> {
    match v {
        Value::Number(n) => match Num::parse(query) {
            Some(q) => Num::of(n).cmp(q),
            None => Some(n.to_string().as_str().cmp(query)),
        },
        Value::String(s) => match (Num::parse(s), Num::parse(query)) {
            (Some(a), Some(b)) => a.cmp(b),
            _ => Some(s.as_str().cmp(query)),
        },
        Value::Bool(b) => match query {
            "true" => Some(b.cmp(&true)),
            "false" => Some(b.cmp(&false)),
            _ => None,
        },
        _ => None,
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `*` matches any run of characters; case-insensitive, as ONTAP matches names.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` and the text position it was tried at, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

// ---------------------------------------------------------------------------------------------
// Ordering

/// Stable-sorts `records` by `order_by` (numbers numerically, strings lexicographically,
/// missing values last in either direction); without keys the input order is kept.
pub fn sort_records(records: &mut [Value], order_by: &[OrderBy]) {
    if order_by.is_empty() {
        return;
    }
    let sort_key = |r: &Value, path: &str| -> Option<Value> {
        let segments: Vec<&str> = path.split('.').collect();
        let mut values = Vec::new();
        leaves(r, &segments, &mut values);
        values.into_iter().find(|v| !v.is_null()).cloned()
    };
    // Keys are extracted once per record; `sort_by` is stable, so ties keep input order.
    let mut keyed: Vec<(Vec<Option<Value>>, Value)> = records
        .iter_mut()
        .map(|r| {
            (
                order_by.iter().map(|o| sort_key(r, &o.path)).collect(),
                r.take(),
            )
        })
        .collect();
    keyed.sort_by(|(a, _), (b, _)| {
        order_by
            .iter()
            .zip(a.iter().zip(b))
            .map(|(o, (x, y))| match (x, y) {
                (Some(x), Some(y)) if o.descending => compare_values(y, x),
                (Some(x), Some(y)) => compare_values(x, y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    for (slot, (_, r)) in records.iter_mut().zip(keyed) {
        *slot = r;
    }
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            Num::of(x).cmp(Num::of(y)).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ if rank(a) == rank(b) => a.to_string().cmp(&b.to_string()),
        _ => rank(a).cmp(&rank(b)),
    }
}

// ---------------------------------------------------------------------------------------------
// Projection

/// Which parts of a value to keep: all of it, or some children (each with its own selection).
#[derive(Debug)]
enum Selection {
    All,
    Children(HashMap<String, Selection>),
}

impl Selection {
    fn none() -> Self {
        Selection::Children(HashMap::new())
    }

    fn add(&mut self, path: &[&str]) {
        let Selection::Children(children) = self else {
            return;
        };
        match path.split_first() {
            None => *self = Selection::All,
            Some((head, rest)) => children
                .entry(head.to_string())
                .or_insert_with(Selection::none)
                .add(rest),
        }
    }

    fn add_path(&mut self, path: &str) {
        self.add(&path.split('.').collect::<Vec<_>>());
    }

    /// Selects all of `full` except the (dotted) `expensive` paths.
    fn add_all_except(&mut self, full: &Value, expensive: &[&str]) {
        let (Selection::Children(children), Value::Object(map)) = (&mut *self, full) else {
            return;
        };
        for (key, value) in map {
            if expensive.contains(&key.as_str()) {
                continue;
            }
            let prefix = format!("{key}.");
            let nested: Vec<&str> = expensive
                .iter()
                .filter_map(|e| e.strip_prefix(&prefix))
                .collect();
            let child = children.entry(key.clone()).or_insert_with(Selection::none);
            if nested.is_empty() || !value.is_object() {
                *child = Selection::All;
            } else {
                child.add_all_except(value, &nested);
            }
        }
    }

    /// The selected part of `value`, or `None` if nothing selected is there.
    fn extract(&self, value: &Value) -> Option<Value> {
        let Selection::Children(children) = self else {
            return Some(value.clone());
        };
        match value {
            Value::Object(map) => {
                // Iterating `map` keeps the key order of the full representation.
                let out: Map<String, Value> = map
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), children.get(k)?.extract(v)?)))
                    .collect();
                (!out.is_empty()).then_some(Value::Object(out))
            }
            Value::Array(items) => {
                // Element-wise; an element lacking the fields stays as `{}` so positions
                // still line up, but an array where no element has them is left out.
                let projected: Vec<Value> = items
                    .iter()
                    .filter(|i| i.is_object())
                    .map(|i| self.extract(i).unwrap_or_else(|| json!({})))
                    .collect();
                let any = items.is_empty() || projected.iter().any(|p| p != &json!({}));
                any.then_some(Value::Array(projected))
            }
            _ => None,
        }
    }
}

/// Projects the full representation of a record onto what the request asked for.
///
/// Without `fields`: an instance GET (`default_all`) gets every top-level field except the
/// `expensive` ones, a collection GET only `keys`. `*` is everything but `expensive`, `**`
/// everything; dotted paths pick nested parts, through arrays element-wise. `keys`, `_links`
/// and `extra_paths` (the filtered fields, which ONTAP returns too) are always kept.
pub fn project(
    full: &Value,
    fields: Option<&[String]>,
    keys: &[&str],
    extra_paths: &[String],
    expensive: &[&str],
    default_all: bool,
) -> Value {
    let mut sel = Selection::none();
    match fields {
        None if default_all => sel.add_all_except(full, expensive),
        None => {}
        Some(fields) => {
            for field in fields {
                match field.as_str() {
                    "**" => sel = Selection::All,
                    "*" => sel.add_all_except(full, expensive),
                    path => sel.add_path(path),
                }
            }
        }
    }
    for path in keys
        .iter()
        .copied()
        .chain(["_links"])
        .chain(extra_paths.iter().map(String::as_str))
    {
        sel.add_path(path);
    }
    sel.extract(full).unwrap_or_else(|| json!({}))
}

// ---------------------------------------------------------------------------------------------
// Collections

/// Percent-encodes a query component; spaces as `%20` rather than `+` so the href reads the
/// same to a client that decodes it as a URL rather than as a form.
fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn key_text(record: &Value, path: &str) -> Option<String> {
    path.split('.')
        .try_fold(record, |v, seg| v.get(seg))
        .and_then(scalar_text)
}

/// Answers a collection GET: filters, orders, pages and projects FULL `records` (each
/// carrying `_links.self.href`) into `{"records", "num_records", "_links"}`.
///
/// `path` is the collection's absolute path (`/api/storage/volumes`); `key_for_cursor` the
/// field whose value the `start.<key>` cursor carries (unique within the collection).
pub fn collection_response(
    records: Vec<Value>,
    q: &OntapQuery,
    path: &str,
    keys: &[&str],
    expensive: &[&str],
    key_for_cursor: &str,
) -> SimResult<Value> {
    let mut records = records;
    sort_records(&mut records, &q.order_by);

    // The cursor is found among ALL ordered records, not just the matching ones, so a
    // record that stopped matching between two pages (renamed, say) still marks the place.
    let start = match &q.start {
        None => 0,
        Some(c) => {
            let param = format!("{CURSOR_PREFIX}{}", c.field);
            if c.field != key_for_cursor {
                return Err(unexpected_argument(&param));
            }
            let at = records
                .iter()
                .position(|r| key_text(r, key_for_cursor).as_deref() == Some(&c.value));
            let at = at.ok_or_else(|| {
                OntapError::invalid_field(
                    &param,
                    format!(
                        "Cannot resume the listing: no record has {param} \"{}\" any more.",
                        c.value
                    ),
                )
            })?;
            at + 1
        }
    };
    let matching: Vec<Value> = records
        .into_iter()
        .skip(start)
        .filter(|r| filter_matches(r, &q.filters))
        .collect();

    let mut links = Map::new();
    let self_href = match q.query_string.as_str() {
        "" => path.to_string(),
        qs => format!("{path}?{qs}"),
    };
    links.insert("self".into(), json!({ "href": self_href }));

    if !q.return_records {
        return Ok(json!({ "num_records": matching.len(), "_links": links }));
    }

    let limit = q.max_records.unwrap_or(usize::MAX).min(matching.len());
    if limit < matching.len() {
        let last = &matching[limit - 1];
        let value = key_text(last, key_for_cursor).ok_or_else(|| {
            OntapError::internal(format!(
                "record without cursor key {key_for_cursor}: {last}"
            ))
        })?;
        let cursor = format!("{CURSOR_PREFIX}{key_for_cursor}");
        // Every original parameter, in order, so the next page is computed exactly as this
        // one was; only the cursor is replaced.
        let query: Vec<String> = q
            .raw
            .iter()
            .filter(|(k, _)| !k.starts_with(CURSOR_PREFIX))
            .chain(std::iter::once(&(cursor, value)))
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        links.insert(
            "next".into(),
            json!({ "href": format!("{path}?{}", query.join("&")) }),
        );
    }

    let extra = q.filter_paths();
    let page: Vec<Value> = matching[..limit]
        .iter()
        .map(|r| project(r, q.fields.as_deref(), keys, &extra, expensive, false))
        .collect();
    Ok(json!({ "records": page, "num_records": limit, "_links": links }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> OntapQuery {
        OntapQuery::parse(Some(s), Resource::Volume, &["restore_to.snapshot.name"]).unwrap()
    }

    fn err(s: &str) -> OntapError {
        OntapQuery::parse(Some(s), Resource::Volume, &[]).unwrap_err()
    }

    fn matches(record: &Value, path: &str, value: &str) -> bool {
        Filter::parse(path, value).matches(record)
    }

    fn vol(name: &str, size: u64, aggrs: &[&str]) -> Value {
        json!({
            "uuid": format!("u-{name}"),
            "name": name,
            "size": size,
            "state": "online",
            "aggregates": aggrs.iter().map(|a| json!({"name": a, "uuid": format!("a-{a}")})).collect::<Vec<_>>(),
            "space": {"size": size, "used": size / 2},
            "_links": {"self": {"href": format!("/api/storage/volumes/u-{name}")}},
        })
    }

    #[test]
    fn parse_sorts_parameters_into_their_roles() {
        let q = q("fields=name,space.used&name=vol*|x&svm.name=vs1&max_records=5&return_records=true\
                   &return_timeout=30&order_by=name%20desc,size&restore_to.snapshot.name=s1&start.uuid=abc");
        assert_eq!(q.fields, Some(vec!["name".into(), "space.used".into()]));
        assert_eq!(q.filter_paths(), ["name", "svm.name"]);
        assert_eq!(q.filters[0].alternatives.len(), 2);
        assert_eq!(q.max_records, Some(5));
        assert!(q.return_records);
        assert_eq!(q.return_timeout_s, Some(30));
        assert_eq!(
            q.order_by,
            [
                OrderBy {
                    path: "name".into(),
                    descending: true
                },
                OrderBy {
                    path: "size".into(),
                    descending: false
                }
            ]
        );
        assert_eq!(
            q.operation,
            [("restore_to.snapshot.name".to_string(), "s1".to_string())]
        );
        assert_eq!(
            q.start,
            Some(Cursor {
                field: "uuid".into(),
                value: "abc".into()
            })
        );
        assert_eq!(q.raw.len(), 9);
        let empty = OntapQuery::parse(None, Resource::Volume, &[]).unwrap();
        assert_eq!(empty, OntapQuery::default());
        assert!(empty.return_records);
    }

    #[test]
    fn parse_decodes_percent_and_plus() {
        let q = q("name=a%7Cb%2A&order_by=name+desc&fields=space.used%2Cname");
        assert_eq!(q.filters[0], Filter::parse("name", "a|b*"));
        assert!(q.order_by[0].descending);
        assert_eq!(q.fields.unwrap(), ["space.used", "name"]);
    }

    #[test]
    fn unknown_fields_are_unexpected_arguments() {
        for (query, target) in [
            ("bogus=1", "bogus"),
            ("space.bogus=1", "space.bogus"),
            ("fields=name,bogus.x", "bogus.x"),
            ("order_by=nope", "nope"),
            // An operation parameter of another request is just an unknown field here.
            ("restore_to.snapshot.name=s", "restore_to.snapshot.name"),
        ] {
            let e = err(query);
            assert_eq!((e.kind, e.code), (ErrorKind::Invalid, 262179), "{query}");
            assert_eq!(e.message, format!("Unexpected argument \"{target}\"."));
            assert_eq!(e.target.as_deref(), Some(target));
        }
        // Documented but unmodelled fields, `*` and `**` are accepted.
        assert!(OntapQuery::parse(
            Some("fields=*,**,anti_ransomware.state,clone.parent_volume.name"),
            Resource::Volume,
            &[]
        )
        .is_ok());
        assert!(OntapQuery::parse(Some("volume.uuid=x"), Resource::Snapshot, &[]).is_ok());
    }

    #[test]
    fn invalid_reserved_values_are_code_2() {
        for (query, target) in [
            ("max_records=abc", "max_records"),
            ("max_records=0", "max_records"),
            ("max_records=-1", "max_records"),
            ("return_timeout=121", "return_timeout"),
            ("return_timeout=x", "return_timeout"),
            ("return_records=yes", "return_records"),
            ("order_by=name%20sideways", "order_by"),
            ("order_by=name%20desc%20x", "order_by"),
        ] {
            let e = err(query);
            assert_eq!((e.kind, e.code), (ErrorKind::Invalid, 2), "{query}");
            assert_eq!(e.target.as_deref(), Some(target), "{query}");
        }
        assert_eq!(q("return_timeout=0").return_timeout_s, Some(0));
        assert_eq!(q("return_timeout=120").return_timeout_s, Some(120));
        assert!(!q("return_records=false").return_records);
    }

    #[test]
    fn equality_negation_and_or() {
        let v = vol("vol1", 100, &[]);
        assert!(matches(&v, "name", "vol1"));
        assert!(!matches(&v, "name", "vol2"));
        assert!(!matches(&v, "name", "VOL1"), "plain equality is exact");
        assert!(matches(&v, "name", "!vol2"));
        assert!(!matches(&v, "name", "!vol1"));
        assert!(matches(&v, "name", "vol2|vol1"));
        assert!(!matches(&v, "name", "vol2|vol3"));
        assert!(matches(&v, "size", "100"));
        assert!(matches(&v, "size", "100.0"));
    }

    #[test]
    fn comparisons_and_ranges() {
        let v = vol("vol1", 100, &[]);
        assert!(matches(&v, "size", "<101") && !matches(&v, "size", "<100"));
        assert!(matches(&v, "size", "<=100") && !matches(&v, "size", "<=99"));
        assert!(matches(&v, "size", ">99") && !matches(&v, "size", ">100"));
        assert!(matches(&v, "size", ">=100") && !matches(&v, "size", ">=101"));
        // Numerically, not as text ("100" < "99" as strings).
        assert!(matches(&v, "size", ">99") && !matches(&v, "size", "<99"));
        assert!(matches(&v, "size", "100..200") && matches(&v, "size", "50..100"));
        assert!(!matches(&v, "size", "101..200"));
        assert!(matches(&v, "size", "..100") && !matches(&v, "size", "101.."));
        assert!(matches(&v, "size", "!<50"));
        // Strings compare as strings; ISO timestamps therefore in time order.
        assert!(matches(&v, "name", ">vol0") && matches(&v, "name", "<vol2"));
        let t = json!({"create_time": "2024-05-01T10:00:00Z"});
        assert!(matches(&t, "create_time", ">=2024-04-30T23:59:59Z"));
        assert!(matches(
            &t,
            "create_time",
            "2024-05-01T00:00:00Z..2024-05-02T00:00:00Z"
        ));
        assert!(!matches(&t, "create_time", "<2024-05-01T09:00:00Z"));
        // Integers beyond f64 precision stay exact.
        let big = json!({"size": 9_007_199_254_740_993u64});
        assert!(matches(&big, "size", ">9007199254740992"));
        // "inf"/"nan" are names, not numbers.
        let s = json!({"name": "nan"});
        assert!(matches(&s, "name", "nan") && matches(&s, "name", ">inf"));
    }

    #[test]
    fn booleans() {
        let v = json!({"is_svm_root": false, "clone": {"is_flexclone": true}});
        assert!(matches(&v, "is_svm_root", "false") && !matches(&v, "is_svm_root", "true"));
        assert!(matches(&v, "clone.is_flexclone", "true"));
        assert!(matches(&v, "clone.is_flexclone", "!false"));
        assert!(!matches(&v, "clone.is_flexclone", "yes"));
    }

    #[test]
    fn wildcards_are_case_insensitive_globs() {
        let v = vol("Data_Vol01", 1, &[]);
        for (pattern, expected) in [
            ("data*", true),
            ("*vol01", true),
            ("*_V*1", true),
            ("*", true),
            ("d*a*v*0*1", true),
            ("data", false),
            ("*vol02", false),
            ("x*", false),
            ("!data*", false),
            ("x*|*VOL*", true),
        ] {
            assert_eq!(matches(&v, "name", pattern), expected, "{pattern}");
        }
        assert!(matches(&v, "size", "1*"), "numbers glob as their text");
        assert!(glob_matches("a*b*c", "aXbYbZc") && !glob_matches("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn null_and_not_null() {
        let v = json!({"nas": {"path": "/v"}, "comment": null, "aggregates": []});
        assert!(matches(&v, "nas.path", "!null") && !matches(&v, "nas.path", "null"));
        assert!(matches(&v, "comment", "null") && !matches(&v, "comment", "!null"));
        assert!(matches(&v, "nas.security_style", "null"));
        assert!(
            matches(&v, "aggregates.name", "null"),
            "an empty array has no names"
        );
        assert!(!matches(&v, "comment", "x"), "absent matches no value");
        assert!(matches(&v, "comment", "x|null"));
        assert!(matches(&v, "nas", "!null"), "an object is set");
    }

    #[test]
    fn filters_go_through_arrays() {
        let v = vol("v", 1, &["aggr1", "aggr2"]);
        assert!(matches(&v, "aggregates.name", "aggr1"));
        assert!(matches(&v, "aggregates.name", "aggr2"));
        assert!(!matches(&v, "aggregates.name", "aggr3"));
        assert!(matches(&v, "aggregates.name", "!aggr3"));
        assert!(
            !matches(&v, "aggregates.name", "!aggr1"),
            "not on aggr1 at all"
        );
        assert!(matches(&v, "aggregates.name", "!null"));
        assert!(matches(&v, "aggregates.uuid", "a-aggr2"));
        let tags = json!({"_tags": ["env:prod", "team:x"]});
        assert!(matches(&tags, "_tags", "team:*") && !matches(&tags, "_tags", "env:dev"));
        assert!(filter_matches(
            &v,
            &[
                Filter::parse("name", "v"),
                Filter::parse("aggregates.name", "aggr2")
            ]
        ));
        assert!(!filter_matches(
            &v,
            &[
                Filter::parse("name", "v"),
                Filter::parse("aggregates.name", "aggr9")
            ]
        ));
        assert!(filter_matches(&v, &[]));
    }

    #[test]
    fn ordering() {
        let names = |rs: &[Value]| {
            rs.iter()
                .map(|r| r["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let mut rs = vec![
            vol("b", 9, &[]),
            vol("a", 10, &[]),
            vol("c", 9, &[]),
            json!({"name": "d"}),
        ];
        sort_records(&mut rs, &q("order_by=size").order_by);
        assert_eq!(
            names(&rs),
            ["b", "c", "a", "d"],
            "numeric, stable, missing last"
        );
        sort_records(&mut rs, &q("order_by=size desc,name desc").order_by);
        assert_eq!(names(&rs), ["a", "c", "b", "d"], "missing last in desc too");
        sort_records(&mut rs, &q("order_by=name").order_by);
        assert_eq!(names(&rs), ["a", "b", "c", "d"]);
        sort_records(&mut rs, &[]);
        assert_eq!(
            names(&rs),
            ["a", "b", "c", "d"],
            "no order_by keeps input order"
        );
        let mut rs = vec![
            json!({"name": "vol10"}),
            json!({"name": "Vol2"}),
            json!({"name": "vol2"}),
        ];
        sort_records(&mut rs, &q("order_by=name").order_by);
        assert_eq!(
            names(&rs),
            ["Vol2", "vol10", "vol2"],
            "strings are lexicographic"
        );
    }

    fn full() -> Value {
        json!({
            "uuid": "u1",
            "name": "vol1",
            "comment": "c",
            "space": {"size": 10, "used": 4, "footprint": 7},
            "aggregates": [{"name": "aggr1", "uuid": "a1"}, {"uuid": "a2"}],
            "statistics": {"iops": 1},
            "_links": {"self": {"href": "/api/storage/volumes/u1"}},
        })
    }

    fn fields(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const KEYS: &[&str] = &["uuid", "name"];

    #[test]
    fn projection_defaults() {
        let f = full();
        let collection = project(&f, None, KEYS, &[], &["statistics"], false);
        assert_eq!(
            collection,
            json!({"uuid": "u1", "name": "vol1", "_links": f["_links"]})
        );
        let instance = project(&f, None, KEYS, &[], &["statistics"], true);
        let mut expected = f.clone();
        expected.as_object_mut().unwrap().remove("statistics");
        assert_eq!(instance, expected);
        let keys: Vec<_> = instance.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            ["uuid", "name", "comment", "space", "aggregates", "_links"],
            "order of full"
        );
    }

    #[test]
    fn projection_star_and_double_star() {
        let f = full();
        let star = project(
            &f,
            Some(&fields(&["*"])),
            KEYS,
            &[],
            &["statistics", "space.footprint"],
            false,
        );
        assert!(star.get("statistics").is_none());
        assert_eq!(star["space"], json!({"size": 10, "used": 4}));
        assert_eq!(star["aggregates"], f["aggregates"]);
        let both = project(
            &f,
            Some(&fields(&["*", "statistics"])),
            KEYS,
            &[],
            &["statistics"],
            false,
        );
        assert_eq!(
            both["statistics"],
            json!({"iops": 1}),
            "expensive fields can be asked for by name"
        );
        let all = project(
            &f,
            Some(&fields(&["**"])),
            KEYS,
            &[],
            &["statistics"],
            false,
        );
        assert_eq!(all, f);
    }

    #[test]
    fn projection_of_nested_and_array_paths() {
        let f = full();
        let p = project(
            &f,
            Some(&fields(&[
                "space.used",
                "aggregates.name",
                "comment.x",
                "anti_ransomware.state",
            ])),
            KEYS,
            &[],
            &[],
            false,
        );
        assert_eq!(
            p,
            json!({
                "uuid": "u1",
                "name": "vol1",
                "space": {"used": 4},
                "aggregates": [{"name": "aggr1"}, {}],
                "_links": f["_links"],
            })
        );
        let p = project(
            &f,
            Some(&fields(&["aggregates.bogus", "space"])),
            &["uuid"],
            &fields(&["comment"]),
            &[],
            false,
        );
        assert_eq!(
            p,
            json!({"uuid": "u1", "comment": "c", "space": f["space"], "_links": f["_links"]}),
            "no element has the field: array absent; extra paths included"
        );
    }

    fn records(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                vol(
                    &format!("vol{i:02}"),
                    (i as u64 * 7) % 5,
                    if i % 3 == 0 { &["aggr1"] } else { &["aggr2"] },
                )
            })
            .collect()
    }

    fn page(records: &[Value], query: &str) -> Value {
        let q = OntapQuery::parse(Some(query), Resource::Volume, &[]).unwrap();
        collection_response(
            records.to_vec(),
            &q,
            "/api/storage/volumes",
            KEYS,
            &[],
            "uuid",
        )
        .unwrap()
    }

    #[test]
    fn paging_follows_next_links_to_the_unpaged_result() {
        let rs = records(20);
        let base = "fields=size,space.used&aggregates.name=aggr2|aggr3&name=!vol05&order_by=size%20desc,name&return_timeout=15";
        let unpaged = page(&rs, base);
        let all = unpaged["records"].as_array().unwrap().clone();
        assert_eq!(all.len(), 12, "20 minus 7 on aggr1 minus vol05");
        assert!(unpaged["_links"].get("next").is_none());
        assert_eq!(
            unpaged["_links"]["self"]["href"],
            format!("/api/storage/volumes?{base}")
        );

        let mut collected = Vec::new();
        let mut href = format!("/api/storage/volumes?{base}&max_records=5");
        let mut pages = 0;
        loop {
            let (path, query) = href.split_once('?').unwrap();
            assert_eq!(path, "/api/storage/volumes");
            let p = page(&rs, query);
            let recs = p["records"].as_array().unwrap();
            assert_eq!(p["num_records"], recs.len());
            collected.extend(recs.iter().cloned());
            pages += 1;
            match p["_links"].get("next") {
                Some(next) => {
                    href = next["href"].as_str().unwrap().to_string();
                    // Every original parameter is repeated, and the cursor appears once.
                    for param in [
                        "fields=size%2Cspace.used",
                        "aggregates.name=aggr2%7Caggr3",
                        "name=%21vol05",
                        "order_by=size%20desc%2Cname",
                        "return_timeout=15",
                        "max_records=5",
                    ] {
                        assert!(href.contains(param), "{href} lacks {param}");
                    }
                    assert_eq!(href.matches("start.uuid=").count(), 1, "{href}");
                }
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(collected, all);
        // Sanity: ordered by size desc then name, and projected with the filter paths.
        assert_eq!(
            all[0].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["uuid", "name", "size", "aggregates", "space", "_links"]
        );
        assert_eq!(all[0]["aggregates"], json!([{"name": "aggr2"}]));
        let sizes: Vec<u64> = all.iter().map(|r| r["size"].as_u64().unwrap()).collect();
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    }

    #[test]
    fn exact_multiple_of_page_size_has_no_empty_last_page() {
        let rs = records(4);
        let first = page(&rs, "max_records=2");
        let next = first["_links"]["next"]["href"].as_str().unwrap();
        let second = page(&rs, next.split_once('?').unwrap().1);
        assert_eq!(second["num_records"], 2);
        assert!(second["_links"].get("next").is_none());
    }

    #[test]
    fn return_records_false_counts_all_matches() {
        let rs = records(20);
        let p = page(
            &rs,
            "return_records=false&aggregates.name=aggr1&max_records=2",
        );
        assert_eq!(
            p,
            json!({"num_records": 7, "_links": {"self": {"href":
            "/api/storage/volumes?return_records=false&aggregates.name=aggr1&max_records=2"}}})
        );
    }

    #[test]
    fn collection_without_query_returns_keys_only() {
        let rs = records(2);
        let p = page(&rs, "");
        assert_eq!(p["num_records"], 2);
        assert_eq!(
            p["_links"],
            json!({"self": {"href": "/api/storage/volumes"}})
        );
        assert_eq!(
            p["records"][1],
            json!({"uuid": "u-vol01", "name": "vol01", "_links": rs[1]["_links"]})
        );
    }

    #[test]
    fn cursor_errors() {
        let rs = records(3);
        let q = OntapQuery::parse(Some("start.uuid=gone"), Resource::Volume, &[]).unwrap();
        let e = collection_response(rs.clone(), &q, "/api/storage/volumes", KEYS, &[], "uuid")
            .unwrap_err();
        assert_eq!((e.code, e.target.as_deref()), (2, Some("start.uuid")));
        let q = OntapQuery::parse(Some("start.name=vol00"), Resource::Volume, &[]).unwrap();
        let e = collection_response(rs, &q, "/api/storage/volumes", KEYS, &[], "uuid").unwrap_err();
        assert_eq!((e.code, e.target.as_deref()), (262179, Some("start.name")));
    }

    #[test]
    fn cursor_survives_its_record_no_longer_matching() {
        let mut rs = records(6);
        let first = page(&rs, "name=vol0*&max_records=2");
        assert_eq!(first["records"][1]["name"], "vol01");
        rs[1]["name"] = json!("renamed");
        let next = first["_links"]["next"]["href"]
            .as_str()
            .unwrap()
            .split_once('?')
            .unwrap()
            .1
            .to_string();
        let second = page(&rs, &next);
        assert_eq!(second["records"][0]["name"], "vol02");
    }

    #[test]
    fn hrefs_encode_special_characters() {
        let rs = vec![
            json!({"uuid": "a b|c*,d", "name": "x"}),
            json!({"uuid": "z", "name": "y"}),
        ];
        let p = page(&rs, "max_records=1&name=x%20y|x|y");
        let href = p["_links"]["next"]["href"].as_str().unwrap();
        assert_eq!(
            href,
            "/api/storage/volumes?max_records=1&name=x%20y%7Cx%7Cy&start.uuid=a%20b%7Cc*%2Cd"
        );
        let back = OntapQuery::parse(Some(href.split_once('?').unwrap().1), Resource::Volume, &[])
            .unwrap();
        assert_eq!(back.start.unwrap().value, "a b|c*,d");
    }
}
