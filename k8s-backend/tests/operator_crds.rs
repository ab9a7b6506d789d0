//! deploy/crds.yaml is exactly what `stasis crds` prints, so the manifests cannot drift from
//! the types the operator reads and writes.

#[test]
fn deploy_crds_yaml_is_the_generated_output() {
    let generated = stasis_k8s::crd::crds_yaml().expect("the CRDs render");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds.yaml");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(on_disk == generated, "{} differs from the generated CRDs: regenerate it with `cargo run -- crds > deploy/crds.yaml`", path.display());
    for kind in ["BackupPolicy", "Backup", "Restore", "DrPlan"] {
        assert!(generated.contains(&format!("kind: {kind}\n")), "{kind} missing");
    }
    assert_eq!(generated.matches("\n---\n").count() + usize::from(generated.starts_with("---\n")), 4, "four documents");
}
