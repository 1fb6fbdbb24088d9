//! The checked-in CRD YAML (`crds/`, and the chart's copy in `charts/mcp-guard/crds/` when present) must match
//! the Rust types. Regenerate both with `cargo run -p mcp-guard-operator --bin crdgen`.

use std::path::{Path, PathBuf};

use mcp_guard_operator::crd::{all_crds, crd_yaml};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check_dir(dir: &Path, problems: &mut Vec<String>) {
    for (file, crd) in all_crds() {
        let path = dir.join(file);
        let expected: serde_yaml::Value =
            serde_yaml::from_str(&crd_yaml(&crd).expect("render")).expect("generated YAML parses");
        match std::fs::read_to_string(&path) {
            Err(e) => problems.push(format!("{}: cannot read ({e})", path.display())),
            Ok(text) => match serde_yaml::from_str::<serde_yaml::Value>(&text) {
                Err(e) => problems.push(format!("{}: not valid YAML ({e})", path.display())),
                Ok(actual) if actual != expected => problems.push(format!(
                    "{}: differs from the types in operator/src/crd.rs",
                    path.display()
                )),
                Ok(_) => {}
            },
        }
    }
}

#[test]
fn crds_are_up_to_date() {
    let root = workspace_root();
    let mut problems = Vec::new();
    check_dir(&root.join("crds"), &mut problems);
    let chart = root.join("charts/mcp-guard/crds");
    if chart.is_dir() {
        check_dir(&chart, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "CRD YAML drifted from the Rust types:\n  {}\nRun `cargo run -p mcp-guard-operator --bin crdgen` (it writes crds/ and \
         charts/mcp-guard/crds/).",
        problems.join("\n  ")
    );
}

#[test]
fn crd_reference_is_up_to_date() {
    let crds: Vec<_> = all_crds().into_iter().map(|(_, crd)| crd).collect();
    let expected = mcp_guard_operator::crd_reference::markdown(&crds);
    let path = workspace_root().join(mcp_guard_operator::crd_reference::PATH);
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{} drifted from the Rust types; run `cargo run -p mcp-guard-operator --bin crdgen`",
        path.display()
    );
    for field in [
        "`spec.selector`",
        "`spec.port`",
        "`spec.hosts`",
        "`status.conditions`",
        "`spec.allowServiceDNSNames`",
    ] {
        assert!(expected.contains(field), "the reference lists {field}");
    }
}

#[test]
fn crds_carry_validation_and_printer_columns() {
    let crds = all_crds();
    let server = serde_json::to_string(&crds[0].1).expect("json");
    assert!(server.contains("x-kubernetes-validations"), "selector CEL rule");
    assert!(server.contains(r#""shortNames":["mcpgs"]"#));
    for col in ["Hosts", "Mode", "Ready", "Age"] {
        assert!(
            server.contains(&format!(r#""name":"{col}""#)),
            "printer column {col}"
        );
    }
    assert!(server.contains("self >= 1 && self <= 65535"), "port range");
    assert!(server.contains("self != '*'"), "no bare * host");
    assert!(!server.contains(r#""pattern":"^(("#), "no host regex");
    assert!(!server.contains(r#""enum""#), "no enum with null");
    let policy = serde_json::to_string(&crds[1].1).expect("json");
    assert!(policy.contains(r#""scope":"Cluster""#));
    assert!(policy.contains("allowServiceDNSNames"));
}
