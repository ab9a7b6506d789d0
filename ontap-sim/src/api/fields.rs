//! The documented field paths of each resource, as ONTAP 9.19.1 defines them.
//!
//! ONTAP answers 400 to a `fields=` entry or a filter naming a field the resource does not
//! have, yet accepts every documented one even where the simulator does not model it
//! (idempotent tools read objects back with long `fields=` lists). This catalog decides which
//! is which; it is parsed once from the field list shipped in `data/`.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

const FIELDS_TXT: &str = include_str!("../../data/fields-9.19.1.txt");

/// The resources the simulator serves, named as the field catalog names its sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Cluster,
    Svm,
    Aggregate,
    Volume,
    Snapshot,
    ConsistencyGroup,
    ConsistencyGroupSnapshot,
    SnapmirrorRelationship,
    SnapmirrorTransfer,
    Job,
    ClusterPeer,
    SvmPeer,
    SnapmirrorPolicy,
}

impl Resource {
    /// Every resource, in declaration order (the catalog is indexed by `self as usize`).
    pub const ALL: [Resource; 13] = [
        Resource::Cluster,
        Resource::Svm,
        Resource::Aggregate,
        Resource::Volume,
        Resource::Snapshot,
        Resource::ConsistencyGroup,
        Resource::ConsistencyGroupSnapshot,
        Resource::SnapmirrorRelationship,
        Resource::SnapmirrorTransfer,
        Resource::Job,
        Resource::ClusterPeer,
        Resource::SvmPeer,
        Resource::SnapmirrorPolicy,
    ];

    /// The section name in the field catalog, e.g. `"ConsistencyGroupSnapshot"`.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cluster => "Cluster",
            Resource::Svm => "Svm",
            Resource::Aggregate => "Aggregate",
            Resource::Volume => "Volume",
            Resource::Snapshot => "Snapshot",
            Resource::ConsistencyGroup => "ConsistencyGroup",
            Resource::ConsistencyGroupSnapshot => "ConsistencyGroupSnapshot",
            Resource::SnapmirrorRelationship => "SnapmirrorRelationship",
            Resource::SnapmirrorTransfer => "SnapmirrorTransfer",
            Resource::Job => "Job",
            Resource::ClusterPeer => "ClusterPeer",
            Resource::SvmPeer => "SvmPeer",
            Resource::SnapmirrorPolicy => "SnapmirrorPolicy",
        }
    }

    /// The documented collection path template,
    /// e.g. `/api/storage/volumes/{volume[uuid]}/snapshots`.
    pub fn collection_path(self) -> &'static str {
        &catalog(self).path
    }

    /// The key fields identifying one record, e.g. `["volume.uuid", "uuid"]` for a snapshot
    /// (empty for the singleton cluster).
    pub fn key_fields(self) -> &'static [String] {
        &catalog(self).keys
    }
}

/// One resource's section of the catalog.
#[derive(Debug, Default)]
struct Catalog {
    path: String,
    keys: Vec<String>,
    /// Documented paths (with `[]` removed), their prefixes and the key fields.
    known: HashSet<String>,
    /// Paths typed `{...}`: an object whose children the catalog does not list, so any
    /// sub-path below them is documented.
    open: HashSet<String>,
}

impl Catalog {
    fn insert(&mut self, path: &str) {
        // Prefixes make `space` valid when only `space.used` is listed.
        for (i, _) in path.match_indices('.') {
            self.known.insert(path[..i].to_string());
        }
        self.known.insert(path.to_string());
    }
}

static CATALOGS: LazyLock<Vec<Catalog>> = LazyLock::new(|| {
    let mut sections = parse_catalog(FIELDS_TXT);
    Resource::ALL
        .iter()
        .map(|r| {
            sections
                .remove(r.name())
                .unwrap_or_else(|| panic!("fields-9.19.1.txt has no section for {}", r.name()))
        })
        .collect()
});

fn catalog(resource: Resource) -> &'static Catalog {
    &CATALOGS[resource as usize]
}

/// Parses `===== Name (/api/path ['key', ...])` headers followed by `path: Type` lines.
fn parse_catalog(text: &str) -> HashMap<String, Catalog> {
    let mut sections = HashMap::new();
    let mut current: Option<(String, Catalog)> = None;
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if let Some(header) = line.strip_prefix("===== ") {
            if let Some((name, cat)) = current.take() {
                sections.insert(name, cat);
            }
            let (name, rest) = header.split_once(" (").expect("section header has a path");
            let rest = rest
                .strip_suffix(')')
                .expect("section header ends with ')'");
            let (path, keys) = rest
                .split_once(" [")
                .expect("section header lists its keys");
            let keys: Vec<String> = keys
                .trim_end_matches(']')
                .split(',')
                .map(|k| k.trim().trim_matches('\'').to_string())
                .filter(|k| !k.is_empty())
                .collect();
            let mut cat = Catalog {
                path: path.to_string(),
                ..Catalog::default()
            };
            for key in &keys {
                cat.insert(key);
            }
            cat.keys = keys;
            current = Some((name.to_string(), cat));
        } else {
            let (_, cat) = current
                .as_mut()
                .expect("field line before any section header");
            let (path, ty) = line
                .split_once(": ")
                .unwrap_or((line.trim_end_matches(':'), ""));
            let path = path.replace("[]", "");
            if ty == "{...}" {
                cat.open.insert(path.clone());
            }
            cat.insert(&path);
        }
    }
    if let Some((name, cat)) = current {
        sections.insert(name, cat);
    }
    sections
}

/// Whether `path` (dotted, arrays without `[]`) names a documented field of `resource`, a
/// prefix of one, or something below an object the catalog leaves open (`{...}`).
/// `uuid`, `name`, `_links` (and below) and the resource's key fields are always accepted.
pub fn is_documented(resource: Resource, path: &str) -> bool {
    if path.is_empty() || path.split('.').any(|s| s.is_empty() || s.contains("[]")) {
        return false;
    }
    if matches!(path, "uuid" | "name" | "_links") || path.starts_with("_links.") {
        return true;
    }
    let cat = catalog(resource);
    cat.known.contains(path)
        || path
            .match_indices('.')
            .any(|(i, _)| cat.open.contains(&path[..i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_has_a_section_with_path_and_keys() {
        for r in Resource::ALL {
            assert!(r.collection_path().starts_with("/api/"), "{r:?}");
            assert!(!catalog(r).known.is_empty(), "{r:?} has no fields");
        }
        assert_eq!(Resource::Volume.collection_path(), "/api/storage/volumes");
        assert_eq!(Resource::Snapshot.key_fields(), ["volume.uuid", "uuid"]);
        assert!(Resource::Cluster.key_fields().is_empty());
    }

    #[test]
    fn documented_leaves_prefixes_and_arrays() {
        use Resource::*;
        assert!(is_documented(Volume, "space.used"));
        assert!(is_documented(Volume, "space"));
        assert!(is_documented(Volume, "aggregates.name"));
        assert!(is_documented(Volume, "aggregates"));
        assert!(is_documented(Volume, "svm.name"));
        assert!(is_documented(Snapshot, "volume.uuid"));
        assert!(is_documented(Job, "state"));
        assert!(!is_documented(Volume, "space.bogus"));
        assert!(!is_documented(Volume, "bogus"));
        // A scalar has no children, and `[]` is catalog notation, not query syntax.
        assert!(!is_documented(Volume, "comment.x"));
        assert!(!is_documented(Volume, "aggregates[].name"));
        assert!(!is_documented(Volume, "space..used"));
        assert!(!is_documented(Volume, ""));
        // Fields of one resource are not fields of another.
        assert!(is_documented(Job, "start_time"));
        assert!(!is_documented(Volume, "start_time"));
    }

    #[test]
    fn anything_below_an_open_object_is_documented() {
        // `clone.parent_volume: {...}` and `activity_tracking.notices[]: {...}`.
        assert!(is_documented(Resource::Volume, "clone.parent_volume.name"));
        assert!(is_documented(Resource::Volume, "clone.parent_volume.uuid"));
        assert!(is_documented(
            Resource::Volume,
            "activity_tracking.notices.x.y"
        ));
        assert!(!is_documented(Resource::Volume, "clone.is_flexclone.x"));
    }

    #[test]
    fn always_accepted_names() {
        for r in Resource::ALL {
            for p in ["uuid", "name", "_links", "_links.self.href"] {
                assert!(is_documented(r, p), "{r:?} {p}");
            }
        }
        assert!(is_documented(
            Resource::SnapmirrorTransfer,
            "relationship.uuid"
        ));
    }
}
