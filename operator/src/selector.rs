//! Whether two label selectors can select the same pod, decided from the selectors alone (no pods needed), so
//! that overlapping MCPServers are reported when they are created rather than when a pod is refused.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[cfg(test)]
mod tests;

/// How two selectors relate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// No pod can carry labels both select.
    Disjoint,
    /// Some pods would be selected by both, e.g. one with these labels.
    Possible(BTreeMap<String, String>),
    /// Every pod the first selects is selected by the second too (e.g. `app=a,tier=mcp` within `app=a`).
    Within,
}

/// What one selector (or two together) require of one label key.
#[derive(Clone, Debug, Default)]
struct KeyRule {
    /// The value must be one of these (`None`: any).
    allowed: Option<BTreeSet<String>>,
    excluded: BTreeSet<String>,
    must_exist: bool,
    must_not_exist: bool,
}

impl KeyRule {
    fn allow(&mut self, values: impl IntoIterator<Item = String>) {
        let values: BTreeSet<String> = values.into_iter().collect();
        self.must_exist = true;
        self.allowed = Some(match self.allowed.take() {
            Some(a) => a.intersection(&values).cloned().collect(),
            None => values,
        });
    }

    /// A value satisfying the rule: `Some(None)` for "the key absent", `None` when nothing satisfies it.
    fn witness(&self) -> Option<Option<String>> {
        if self.must_not_exist {
            return (!self.must_exist && self.allowed.is_none()).then_some(None);
        }
        match &self.allowed {
            Some(allowed) => allowed.difference(&self.excluded).next().map(|v| Some(v.clone())),
            None if self.must_exist => {
                let v = (0..)
                    .map(|i| format!("x{i}"))
                    .find(|v| !self.excluded.contains(v))?;
                Some(Some(v))
            }
            None => Some(None),
        }
    }
}

/// The per-key rules of a selector, added to `rules`. `false` when it uses an unknown operator (such a selector
/// selects nothing, as in [`matches`]).
fn add_rules(sel: &LabelSelector, rules: &mut BTreeMap<String, KeyRule>) -> bool {
    for (k, v) in sel.match_labels.iter().flatten() {
        rules.entry(k.clone()).or_default().allow([v.clone()]);
    }
    for e in sel.match_expressions.iter().flatten() {
        let rule = rules.entry(e.key.clone()).or_default();
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => rule.allow(values),
            "NotIn" => rule.excluded.extend(values),
            "Exists" => rule.must_exist = true,
            "DoesNotExist" => rule.must_not_exist = true,
            _ => return false,
        }
    }
    true
}

fn is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

/// Whether two `matchLabels` require different values of one key: the common case of unrelated MCPServers
/// (`app=a`, `app=b`), decided without building anything (a namespace of N servers compares N² pairs).
pub fn labels_conflict(a: &LabelSelector, b: &LabelSelector) -> bool {
    let (Some(a), Some(b)) = (&a.match_labels, &b.match_labels) else {
        return false;
    };
    a.iter().any(|(k, v)| b.get(k).is_some_and(|w| w != v))
}

/// Whether a selector selects a pod (or namespace) with these labels: the one matcher of the controller and the
/// webhook. An empty selector, or one with an unknown operator, selects nothing here (validation rejects both; an
/// empty one would otherwise select every pod in the namespace).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        match (e.operator.as_str(), e.values.as_deref()) {
            ("In", Some(values)) => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            ("NotIn", Some(values)) => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            ("Exists", _) => labels.contains_key(&e.key),
            ("DoesNotExist", _) => !labels.contains_key(&e.key),
            // `In`/`NotIn` without values, or an unknown operator: a malformed selector (kube's parser refuses
            // it), which selects nothing.
            _ => false,
        }
    });
    let non_empty = selector.match_labels.as_ref().is_some_and(|m| !m.is_empty())
        || selector.match_expressions.as_ref().is_some_and(|m| !m.is_empty());
    non_empty && labels_ok && exprs_ok
}

/// Labels of a pod that both selectors select, if one can exist.
pub fn common_pod(a: &LabelSelector, b: &LabelSelector) -> Option<BTreeMap<String, String>> {
    if is_empty(a) || is_empty(b) || labels_conflict(a, b) {
        return None;
    }
    let mut rules = BTreeMap::new();
    if !add_rules(a, &mut rules) || !add_rules(b, &mut rules) {
        return None;
    }
    let mut labels = BTreeMap::new();
    for (k, rule) in rules {
        if let Some(v) = rule.witness()? {
            labels.insert(k, v);
        }
    }
    Some(labels)
}

/// Whether every pod `inner` selects is selected by `outer`: each requirement of `outer` follows from those of
/// `inner` on the same key (decided per key, which is exact for these operators).
fn within(inner: &LabelSelector, outer: &LabelSelector) -> bool {
    let (mut i, mut o) = (BTreeMap::new(), BTreeMap::new());
    if !add_rules(inner, &mut i) || !add_rules(outer, &mut o) || is_empty(outer) {
        return false;
    }
    o.iter().all(|(k, need)| {
        let have = i.get(k).cloned().unwrap_or_default();
        let exists = have.must_exist || have.allowed.is_some();
        let values_ok = match (&need.allowed, &have.allowed) {
            (None, _) => true,
            (Some(need), Some(have)) => have.is_subset(need),
            (Some(_), None) => false,
        };
        let excluded_ok = need.excluded.iter().all(|v| {
            have.excluded.contains(v)
                || have.allowed.as_ref().is_some_and(|a| !a.contains(v))
                || have.must_not_exist
        });
        (!need.must_exist || exists)
            && (!need.must_not_exist || have.must_not_exist)
            && values_ok
            && excluded_ok
    })
}

/// How the pods `a` selects relate to those `b` selects.
pub fn overlap(a: &LabelSelector, b: &LabelSelector) -> Overlap {
    if labels_conflict(a, b) {
        return Overlap::Disjoint;
    }
    match common_pod(a, b) {
        None => Overlap::Disjoint,
        Some(_) if within(a, b) => Overlap::Within,
        Some(labels) => Overlap::Possible(labels),
    }
}

/// `k=v,k2=v2` for messages.
pub fn describe(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
