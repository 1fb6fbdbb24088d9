//! The CRD field reference (`docs/crd-reference.md`), rendered from the same generated CRDs as `crds/`, so the
//! documentation cannot drift from the types: `crdgen` writes it and `operator/tests/crds.rs` checks it.

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// Where the reference is checked in, relative to the workspace root.
pub const PATH: &str = "docs/crd-reference.md";

/// The reference for `crds`, one section per kind with a row per field of `spec` and `status`.
pub fn markdown(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::from(
        "# CRD reference\n\nGenerated from the Rust types in `operator/src/crd.rs` by `cargo run -p \
         mcp-guard-operator --bin crdgen`; do not edit. Examples and how the operator uses each field: \
         [crds.md](crds.md).\n",
    );
    for crd in crds {
        let names = &crd.spec.names;
        for version in &crd.spec.versions {
            let _ = write!(
                out,
                "\n## {}\n\n`{}/{}`, {}{}.\n\n| field | type | description |\n|---|---|---|\n",
                names.kind,
                crd.spec.group,
                version.name,
                if crd.spec.scope == "Namespaced" {
                    "namespaced"
                } else {
                    "cluster-scoped"
                },
                names
                    .short_names
                    .as_ref()
                    .map(|s| format!(", short names: {}", s.join(", ")))
                    .unwrap_or_default(),
            );
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(Value::Null);
            for top in ["spec", "status"] {
                if let Some(field) = schema.pointer(&format!("/properties/{top}")) {
                    rows(&mut out, top, field, false);
                }
            }
        }
    }
    out
}

/// Appends the row for `field` at `path` and the rows of everything under it.
fn rows(out: &mut String, path: &str, field: &Value, required: bool) {
    let _ = writeln!(
        out,
        "| `{path}` | {} | {} |",
        type_of(field, required),
        describe(field)
    );
    let required_children: Vec<&str> = field
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = field.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            rows(
                out,
                &format!("{path}.{name}"),
                child,
                required_children.contains(&name.as_str()),
            );
        }
    }
    if let Some(items) = field.get("items").filter(|i| i.get("properties").is_some()) {
        for (name, child) in items["properties"].as_object().into_iter().flatten() {
            let item_required = items
                .get("required")
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().any(|n| n == name));
            rows(out, &format!("{path}[].{name}"), child, item_required);
        }
    }
}

fn type_of(field: &Value, required: bool) -> String {
    let mut t = match field.get("type").and_then(Value::as_str) {
        Some("array") => {
            let item = field
                .pointer("/items/type")
                .and_then(Value::as_str)
                .unwrap_or("object");
            format!("[]{item}")
        }
        Some("object") if field.get("additionalProperties").is_some() => "map".to_string(),
        Some(t) => t.to_string(),
        None if field.get("x-kubernetes-int-or-string").is_some() => "int-or-string".to_string(),
        None => "any".to_string(),
    };
    if required {
        t.push_str(", required");
    }
    t
}

/// The field's description and its constraints, on one table line.
fn describe(field: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(d) = field.get("description").and_then(Value::as_str) {
        parts.push(d.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    if let Some(values) = field.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .filter(|v| !v.is_null()) // an optional enum lists null; leaving the field out says the same
            .map(|v| format!("`{}`", plain(v)))
            .collect();
        parts.push(format!("One of {}.", values.join(", ")));
    }
    if let Some(default) = field.get("default") {
        parts.push(format!("Default `{}`.", plain(default)));
    }
    for (key, label) in [
        ("minimum", "Minimum"),
        ("maximum", "Maximum"),
        ("maxItems", "At most items:"),
        ("maxLength", "Max length"),
        ("pattern", "Pattern"),
    ] {
        if let Some(v) = field.get(key) {
            parts.push(format!("{label} `{}`.", plain(v)));
        }
    }
    if let Some(rules) = field.get("x-kubernetes-validations").and_then(Value::as_array) {
        for rule in rules {
            let message = rule.get("message").and_then(Value::as_str).unwrap_or("");
            parts.push(format!("Rule `{}`: {message}", plain(&rule["rule"])));
        }
    }
    parts.join(" ").replace('|', "\\|")
}

fn plain(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
}
