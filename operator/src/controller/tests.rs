use super::*;
use crate::sources::{DepKind, Dependency};

#[test]
fn dependency_index_records_and_forgets() {
    let mut index = DependencyIndex::default();
    let a = ObjectRef::<MCPServer>::new("a").within("ns");
    let b = ObjectRef::<MCPServer>::new("b").within("ns");
    let ing = Dependency::new(DepKind::Ingress, Some("ns"), "web");
    let svc = Dependency::new(DepKind::Service, Some("ns"), "svc");
    index.record(&a, &[ing.clone(), svc.clone()].into());
    index.record(&b, &[ing.clone()].into());
    let mut deps = index.dependents(&ing);
    deps.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(deps, vec![a.clone(), b.clone()]);
    index.record(&a, &[svc.clone()].into());
    assert_eq!(index.dependents(&ing), vec![b.clone()]);
    index.forget(&b);
    assert!(index.dependents(&ing).is_empty());
    assert_eq!(index.dependents(&svc), vec![a]);
}

fn status_with(hosts: &[&str], empty_reason: Option<&str>) -> MCPServerStatus {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    MCPServerStatus {
        allowed_hosts: hosts
            .iter()
            .map(|h| crate::crd::AllowlistEntry {
                value: h.to_string(),
                sources: vec!["MCPServer spec.hosts".into()],
            })
            .collect(),
        conditions: vec![Condition {
            type_: status::condition::EMPTY_ALLOWLIST.into(),
            status: if empty_reason.is_some() { "True" } else { "False" }.into(),
            reason: empty_reason.unwrap_or(status::reason::HOSTS_FOUND).into(),
            message: "m".into(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        }],
        ..Default::default()
    }
}

#[test]
fn events_name_each_change_and_warn_only_after_the_grace_period() {
    let reasons = |previous: Option<&MCPServerStatus>, now: &MCPServerStatus| -> Vec<String> {
        events_for(previous, now).into_iter().map(|e| e.reason).collect()
    };
    let pending = status_with(&[], Some(status::reason::NO_HOSTS_YET));
    let warned = status_with(&[], Some(status::reason::NO_HOSTS_FOUND));
    let a = status_with(&["a.example.com"], None);
    let b = status_with(&["b.example.com"], None);
    // (previous, now, Events)
    assert_eq!(
        reasons(None, &pending),
        Vec::<String>::new(),
        "no warning while pending"
    );
    assert_eq!(reasons(Some(&pending), &pending), Vec::<String>::new());
    assert_eq!(reasons(Some(&pending), &warned), vec!["EmptyAllowlist"]);
    assert_eq!(
        reasons(Some(&warned), &warned),
        Vec::<String>::new(),
        "warned once"
    );
    assert_eq!(reasons(None, &warned), vec!["EmptyAllowlist"]);
    assert_eq!(reasons(Some(&pending), &a), vec!["AllowlistUpdated"]);
    assert_eq!(reasons(Some(&a), &a), Vec::<String>::new());
    let notes: Vec<String> = [events_for(Some(&pending), &a), events_for(Some(&a), &b)]
        .into_iter()
        .flatten()
        .map(|e| e.note)
        .collect();
    assert!(notes[0].contains("hosts added: a.example.com"), "{notes:?}");
    assert!(
        notes[1].contains("hosts added: b.example.com; hosts removed: a.example.com"),
        "{notes:?}"
    );
}

#[test]
fn an_event_names_the_pods_found_without_the_guard_once() {
    let with = |names: &[&str]| MCPServerStatus {
        unguarded_pods: names
            .iter()
            .map(|n| UnguardedPodStatus {
                name: n.to_string(),
                fix: "kubectl rollout restart -n ns deployment/weather".into(),
            })
            .collect(),
        ..status_with(&["a.example.com"], None)
    };
    let unguarded = |previous: &MCPServerStatus, now: &MCPServerStatus| -> Vec<EventNote> {
        events_for(Some(previous), now)
            .into_iter()
            .filter(|e| e.reason == "UnguardedPods")
            .collect()
    };
    let (none, one, two) = (with(&[]), with(&["w-1"]), with(&["w-1", "w-2"]));
    // (previous, now, Events)
    assert!(unguarded(&none, &none).is_empty());
    assert!(unguarded(&one, &one).is_empty(), "said once");
    assert!(unguarded(&two, &one).is_empty(), "one fewer: nothing new");
    assert!(unguarded(&one, &none).is_empty());
    let found = unguarded(&none, &one);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].type_, EventType::Warning);
    assert_eq!(
        found[0].note,
        "1 pod without the guard: w-1 (admitted while the webhook was unreachable with failurePolicy Ignore, or \
         created before the MCPServer or the webhook); to inject it: kubectl rollout restart -n ns \
         deployment/weather"
    );
    // Only the new pod is named (the note stays true), each command once.
    let found = unguarded(&one, &two);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].note.starts_with("1 pod without the guard: w-2 "),
        "{}",
        found[0].note
    );
    let found = unguarded(&none, &two);
    assert_eq!(
        found[0].note.matches("kubectl rollout restart").count(),
        1,
        "{}",
        found[0].note
    );
}

#[test]
fn policy_status_updates_do_not_count_as_spec_changes() {
    let policy = |uid: &str, generation: i64| MCPGuardPolicy {
        metadata: kube::api::ObjectMeta {
            name: Some("default".into()),
            uid: Some(uid.into()),
            generation: Some(generation),
            ..Default::default()
        },
        spec: Default::default(),
        status: None,
    };
    let mut seen = PolicyGenerations::default();
    // (event, exists, matters)
    assert!(seen.spec_changed(&policy("u1", 1), true), "new");
    assert!(!seen.spec_changed(&policy("u1", 1), true), "status only");
    assert!(seen.spec_changed(&policy("u1", 2), true), "spec edit");
    assert!(seen.spec_changed(&policy("u1", 2), false), "deleted");
    assert!(seen.spec_changed(&policy("u2", 1), true), "re-created");
}
