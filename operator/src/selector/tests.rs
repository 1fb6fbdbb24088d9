use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use super::*;
use crate::webhook::inject::selects;

/// `app=a,tier=b` → matchLabels; `key In v1|v2`, `key NotIn v`, `key Exists`, `key DoesNotExist`.
fn sel(labels: &[(&str, &str)], exprs: &[(&str, &str, &[&str])]) -> LabelSelector {
    LabelSelector {
        match_labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        match_expressions: (!exprs.is_empty()).then(|| {
            exprs
                .iter()
                .map(|(k, op, vs)| LabelSelectorRequirement {
                    key: k.to_string(),
                    operator: op.to_string(),
                    values: (!vs.is_empty()).then(|| vs.iter().map(|v| v.to_string()).collect()),
                })
                .collect()
        }),
    }
}

#[test]
fn overlaps_are_found_without_pods() {
    let app_a = sel(&[("app", "a")], &[]);
    // (a, b, expected: "disjoint" | "possible" | "within")
    let cases = [
        (sel(&[("app", "a")], &[]), sel(&[("app", "b")], &[]), "disjoint"),
        (
            sel(&[("app", "a"), ("tier", "mcp")], &[]),
            app_a.clone(),
            "within",
        ),
        (
            app_a.clone(),
            sel(&[("app", "a"), ("tier", "mcp")], &[]),
            "possible",
        ),
        (app_a.clone(), sel(&[("tier", "mcp")], &[]), "possible"),
        (
            sel(&[], &[("app", "In", &["a", "b"])]),
            sel(&[], &[("app", "In", &["b", "c"])]),
            "possible",
        ),
        (
            sel(&[], &[("app", "In", &["a"])]),
            sel(&[], &[("app", "In", &["b", "c"])]),
            "disjoint",
        ),
        (app_a.clone(), sel(&[], &[("app", "NotIn", &["a"])]), "disjoint"),
        (
            app_a.clone(),
            sel(&[], &[("app", "DoesNotExist", &[])]),
            "disjoint",
        ),
        (
            sel(&[], &[("canary", "DoesNotExist", &[])]),
            sel(&[("app", "a")], &[]),
            "possible",
        ),
        (
            sel(&[("app", "a")], &[("canary", "DoesNotExist", &[])]),
            app_a.clone(),
            "within",
        ),
        (
            sel(&[("app", "a")], &[]),
            sel(&[], &[("app", "In", &["a", "b"])]),
            "within",
        ),
        (
            sel(&[], &[("app", "Exists", &[])]),
            sel(&[], &[("app", "NotIn", &["x0"])]),
            "possible",
        ),
        (app_a.clone(), sel(&[], &[("app", "Like", &[])]), "disjoint"),
        (app_a.clone(), LabelSelector::default(), "disjoint"),
    ];
    for (i, (a, b, want)) in cases.iter().enumerate() {
        let got = overlap(a, b);
        let kind = match &got {
            Overlap::Disjoint => "disjoint",
            Overlap::Possible(_) => "possible",
            Overlap::Within => "within",
        };
        assert_eq!(kind, *want, "case {i}: {got:?}");
        // Whenever a common pod is claimed, both selectors really select it (the real selector code decides).
        if let Some(labels) = common_pod(a, b) {
            assert!(selects(a, &labels) && selects(b, &labels), "case {i}: {labels:?}");
        }
    }
}
