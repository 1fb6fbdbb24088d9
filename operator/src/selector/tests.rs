use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use super::*;
use kube::core::{Selector, SelectorExt};
use proptest::prelude::*;

/// The reference: kube's own selector code (what the API server's semantics are written down in for Rust).
fn kube_selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    match Selector::try_from(selector.clone()) {
        Ok(sel) => !sel.selects_all() && sel.matches(labels),
        Err(_) => false,
    }
}

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
            assert!(
                kube_selects(a, &labels) && kube_selects(b, &labels),
                "case {i}: {labels:?}"
            );
        }
    }
}

#[test]
fn empty_selector_selects_nothing() {
    let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
    assert!(!matches(&LabelSelector::default(), &labels));
    assert!(!matches(&sel(&[("a", "b")], &[("a", "Like", &["b"])]), &labels));
    assert!(matches(&sel(&[], &[("a", "In", &["b"])]), &labels));
}

/// A selector over two keys and two values, so that generated labels hit and miss it often.
fn arb_selector() -> impl Strategy<Value = LabelSelector> {
    let key = prop::sample::select(vec!["app", "tier"]);
    let value = prop::sample::select(vec!["a", "b"]);
    let op = prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist", "Like"]);
    let labels = prop::collection::btree_map(key.clone(), value.clone(), 0..3);
    // `None` values too (`sel` writes `Some`): a malformed selector must select nothing in both.
    let values = prop::option::of(prop::collection::vec(value.prop_map(str::to_string), 0..3));
    let exprs = prop::collection::vec((key, op, values), 0..3);
    (labels, exprs).prop_map(|(labels, exprs)| {
        let labels: Vec<(&str, &str)> = labels.into_iter().collect();
        let mut s = sel(&labels, &[]);
        s.match_expressions = (!exprs.is_empty()).then(|| {
            exprs
                .into_iter()
                .map(|(k, op, values)| LabelSelectorRequirement {
                    key: k.to_string(),
                    operator: op.to_string(),
                    values,
                })
                .collect()
        });
        s
    })
}

proptest! {
    /// The controller and the webhook share [`matches`]; it must say what kube's selector code says (which the
    /// webhook used before), for every selector and label set.
    #[test]
    fn matches_agrees_with_kube(
        selector in arb_selector(),
        labels in prop::collection::btree_map(
            prop::sample::select(vec!["app".to_string(), "tier".to_string(), "x".to_string()]),
            prop::sample::select(vec!["a".to_string(), "b".to_string()]),
            0..3,
        ),
    ) {
        prop_assert_eq!(matches(&selector, &labels), kube_selects(&selector, &labels), "{:?} {:?}", selector, labels);
    }
}
