use super::*;
use crate::sources::testkit::*;

#[test]
fn pods_without_the_guard_are_a_bypass() {
    // (pods, bypass messages expected containing)
    let cases: Vec<(Vec<Pod>, Vec<&str>)> = vec![
        (
            vec![pod(
                "w-1",
                &[("app", "weather")],
                Some("weather"),
                &[("http", 8000)],
            )],
            vec![],
        ),
        (
            vec![pod("w-1", &[("app", "weather")], None, &[("http", 8000)])],
            vec!["pods without the guard", "w-1"],
        ),
        (
            vec![pod("w-1", &[("app", "weather")], Some("radar"), &[])],
            vec!["another MCPServer", "radar"],
        ),
        // Not selected: ignored.
        (vec![pod("other", &[("app", "frontend")], None, &[])], vec![]),
    ];
    for (i, (pods, want)) in cases.into_iter().enumerate() {
        let world = World {
            services: vec![web_service()],
            pods,
            policy: no_dns(),
            ..Default::default()
        };
        let d = world.derive(&spec(&[("app", "weather")]));
        let all = d.messages(FindingKind::Bypass).join("; ");
        if want.is_empty() {
            assert!(d.messages(FindingKind::Bypass).is_empty(), "case {i}: {all}");
        }
        for w in want {
            assert!(all.contains(w), "case {i}: {w:?} not in {all}");
        }
    }
}

#[test]
fn named_target_ports_resolve_through_pods() {
    let svc = service(
        "weather",
        &[("app", "weather")],
        vec![
            sport(80, Some(IntOrString::String("http".into())), Some("http")),
            sport(9090, Some(IntOrString::String("metrics".into())), Some("metrics")),
            sport(9999, Some(IntOrString::String("nope".into())), Some("nope")),
        ],
    );
    let pods = vec![pod(
        "w-1",
        &[("app", "weather")],
        Some("weather"),
        &[("http", 8000), ("metrics", 9090)],
    )];
    let world = World {
        services: vec![svc],
        ingresses: vec![ingress(
            "web",
            vec![
                rule(Some("mcp.example.com"), vec![backend("weather", named("http"))]),
                rule(Some("m.example.com"), vec![backend("weather", named("nope"))]),
            ],
            &[],
        )],
        pods,
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert_eq!(values(&d.hosts), vec!["mcp.example.com"]);
    assert_eq!(
        d.messages(FindingKind::Bypass).len(),
        1,
        "{:?}",
        d.messages(FindingKind::Bypass)
    );
    assert!(
        d.messages(FindingKind::Bypass)[0].contains("container \"server\"")
            && d.messages(FindingKind::Bypass)[0].contains("9090"),
        "{:?}",
        d.messages(FindingKind::Bypass)
    );
    assert_eq!(
        d.messages(FindingKind::PortMismatch).len(),
        1,
        "{:?}",
        d.messages(FindingKind::PortMismatch)
    );
    assert!(
        d.messages(FindingKind::PortMismatch)[0].contains("\"nope\""),
        "{:?}",
        d.messages(FindingKind::PortMismatch)
    );
    assert!(
        d.dependencies
            .contains(&Dependency::new(DepKind::Pod, Some(NS), "w-1"))
    );
}

#[test]
fn spec_port_not_declared_is_reported() {
    let pods = vec![pod(
        "w-1",
        &[("app", "weather")],
        Some("weather"),
        &[("http", 8080)],
    )];
    let world = World {
        services: vec![web_service()],
        pods,
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert!(
        d.messages(FindingKind::Problem)
            .iter()
            .any(|p| p.contains("declares port 8000") || p.contains("port 8000 (spec.port)")),
        "{:?}",
        d.messages(FindingKind::Problem)
    );
    // Pods that declare no ports at all say nothing either way.
    let pods = vec![pod("w-1", &[("app", "weather")], Some("weather"), &[])];
    let world = World {
        services: vec![web_service()],
        pods,
        policy: no_dns(),
        ..Default::default()
    };
    assert!(
        world
            .derive(&spec(&[("app", "weather")]))
            .messages(FindingKind::Problem)
            .is_empty()
    );
}

#[test]
fn a_pod_maps_to_the_servers_selecting_it_now_and_before() {
    let world = Cache {
        servers: vec![
            server("ns", "a", &[("app", "a")]),
            server("ns", "b", &[("app", "b")]),
            server("other", "a2", &[("app", "a")]),
        ],
        ..Default::default()
    };
    let stores = world.stores();
    let mut index = DependencyIndex::default();
    // Server b's last derivation saw pod "was-b" (it was relabelled since).
    index.record(
        &ObjectRef::new("b").within("ns"),
        &[Dependency::new(DepKind::Pod, Some("ns"), "was-b")].into(),
    );
    // (pod name, its labels, servers to reconcile)
    let table: &[(&str, Pairs, Want)] = &[
        ("p", &[("app", "a")], &["ns/a"]),
        ("p", &[("app", "a"), ("x", "y")], &["ns/a"]),
        ("p", &[("app", "c")], &[]),
        ("p", &[], &[]),
        ("was-b", &[("app", "a")], &["ns/a", "ns/b"]),
        ("was-b", &[], &["ns/b"]),
    ];
    for (name, labels, want) in table {
        assert_eq!(
            names(map(&stores, &index, &labelled_pod("ns", name, labels))),
            *want,
            "pod {name} {labels:?}"
        );
    }
}

/// A pod owned (as controller) by `kind`/`owner`, with a `pod-template-hash` label when given.
fn owned_pod(name: &str, owner: Option<(&str, &str, &str)>, hash: Option<&str>) -> Pod {
    let mut p = pod(name, &[("app", "weather")], None, &[("http", 8000)]);
    if let Some(hash) = hash {
        p.metadata
            .labels
            .get_or_insert_default()
            .insert("pod-template-hash".into(), hash.into());
    }
    if let Some((api_version, kind, owner)) = owner {
        p.metadata.owner_references = Some(vec![
            serde_json::from_value(serde_json::json!({
                "apiVersion": api_version, "kind": kind, "name": owner, "uid": "u", "controller": true
            }))
            .expect("owner reference"),
        ]);
    }
    p
}

#[test]
fn each_unguarded_pod_gets_the_command_that_injects_it() {
    let rollout = |kind, name: &str| Fix::RolloutRestart {
        kind,
        name: name.into(),
    };
    // (owner (apiVersion, kind, name), pod-template-hash, fix)
    type Owner<'a> = Option<(&'a str, &'a str, &'a str)>;
    let table: &[(Owner, Option<&str>, Fix)] = &[
        (
            Some(("apps/v1", "ReplicaSet", "weather-7d9f8b6c5")),
            Some("7d9f8b6c5"),
            rollout("deployment", "weather"),
        ),
        (
            Some(("apps/v1", "ReplicaSet", "my-weather-app-7d9f8b6c5")),
            Some("7d9f8b6c5"),
            rollout("deployment", "my-weather-app"),
        ),
        // A ReplicaSet of no Deployment (its name does not end in the hash): it replaces a deleted pod.
        (Some(("apps/v1", "ReplicaSet", "weather")), None, Fix::DeletePod),
        (
            Some(("apps/v1", "ReplicaSet", "weather-abc")),
            Some("xyz"),
            Fix::DeletePod,
        ),
        (Some(("apps/v1", "ReplicaSet", "-h")), Some("h"), Fix::DeletePod),
        (
            Some(("apps/v1", "StatefulSet", "db")),
            None,
            rollout("statefulset", "db"),
        ),
        (
            Some(("apps/v1", "DaemonSet", "agent")),
            None,
            rollout("daemonset", "agent"),
        ),
        (Some(("batch/v1", "Job", "once")), None, Fix::DeletePod),
        // Another API group's StatefulSet is not the one `kubectl rollout restart` knows.
        (
            Some(("apps.kruise.io/v1beta1", "StatefulSet", "db")),
            None,
            Fix::DeletePod,
        ),
        (None, None, Fix::RecreatePod),
    ];
    for (owner, hash, want) in table {
        let p = owned_pod("w-1", *owner, *hash);
        assert_eq!(fix_for(&p), *want, "{owner:?} {hash:?}");
    }
    // An owner reference that is not the controller does not replace the pod.
    let mut p = owned_pod("w-1", Some(("apps/v1", "StatefulSet", "db")), None);
    p.metadata.owner_references.as_mut().expect("owned")[0].controller = None;
    assert_eq!(fix_for(&p), Fix::RecreatePod);
}

#[test]
fn unguarded_pods_are_a_typed_finding_with_their_commands() {
    let rs = Some(("apps/v1", "ReplicaSet", "weather-5f6d"));
    let world = World {
        services: vec![web_service()],
        pods: vec![
            owned_pod("weather-5f6d-b", rs, Some("5f6d")),
            owned_pod("weather-5f6d-a", rs, Some("5f6d")),
            owned_pod("debug", None, None),
            pod(
                "guarded",
                &[("app", "weather")],
                Some("weather"),
                &[("http", 8000)],
            ),
        ],
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    let found: Vec<(&str, String)> = d
        .unguarded_pods()
        .iter()
        .map(|p| (p.name.as_str(), p.command()))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "debug",
                format!("kubectl delete pod -n {NS} debug (then create it again from its manifest)")
            ),
            (
                "weather-5f6d-a",
                format!("kubectl rollout restart -n {NS} deployment/weather")
            ),
            (
                "weather-5f6d-b",
                format!("kubectl rollout restart -n {NS} deployment/weather")
            ),
        ]
    );
    // One GuardBypass message naming the pods and each command once.
    let bypass = d.messages(FindingKind::Bypass);
    assert_eq!(bypass.len(), 1, "{bypass:?}");
    assert_eq!(
        bypass[0]
            .matches(&format!("kubectl rollout restart -n {NS} deployment/weather"))
            .count(),
        1,
        "{bypass:?}"
    );
    assert!(
        bypass[0].contains("debug, weather-5f6d-a, weather-5f6d-b"),
        "{bypass:?}"
    );
    // Guarded pods: none listed.
    let world = World {
        services: vec![web_service()],
        pods: vec![pod(
            "guarded",
            &[("app", "weather")],
            Some("weather"),
            &[("http", 8000)],
        )],
        policy: no_dns(),
        ..Default::default()
    };
    assert!(
        world
            .derive(&spec(&[("app", "weather")]))
            .unguarded_pods()
            .is_empty()
    );
}

proptest::proptest! {
    /// Whatever the names: a Deployment is named only when the ReplicaSet's name is exactly it, `-`, the pod's
    /// template hash; and a generated Deployment's pods always name it back.
    #[test]
    fn the_deployment_named_is_the_one_that_owns_the_replica_set(
        deployment in "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?",
        hash in "[a-z0-9]{1,10}",
        owner in "[-a-z0-9]{0,30}",
    ) {
        let theirs = owned_pod("p", Some(("apps/v1", "ReplicaSet", &format!("{deployment}-{hash}"))), Some(&hash));
        proptest::prop_assert_eq!(
            fix_for(&theirs),
            Fix::RolloutRestart { kind: "deployment", name: deployment.clone() }
        );
        let any = owned_pod("p", Some(("apps/v1", "ReplicaSet", &owner)), Some(&hash));
        match fix_for(&any) {
            Fix::RolloutRestart { kind, name } => {
                proptest::prop_assert_eq!(kind, "deployment");
                proptest::prop_assert!(!name.is_empty());
                proptest::prop_assert_eq!(format!("{name}-{hash}"), owner);
            }
            other => proptest::prop_assert_eq!(other, Fix::DeletePod),
        }
    }
}

#[test]
fn what_keeps_the_webhook_from_injecting_comes_first() {
    let rs = Some(("apps/v1", "ReplicaSet", "weather-5f6d"));
    let restart = format!("kubectl rollout restart -n {NS} deployment/weather");
    let opted_in = BTreeMap::from([("mcpguard.dev/injection".to_string(), "enabled".to_string())]);
    let not_opted_in = BTreeMap::from([("mcpguard.dev/injection".to_string(), "disabled".to_string())]);
    let plain = owned_pod("weather-5f6d-a", rs, Some("5f6d"));
    let mut opted_out = plain.clone();
    opted_out
        .metadata
        .labels
        .get_or_insert_default()
        .insert("mcpguard.dev/inject".into(), "false".into());
    let mut host_network = opted_out.clone();
    host_network.spec.get_or_insert_default().host_network = Some(true);
    // (pod, namespace labels, command) — the webhook's skip rules in its order: host network, namespace, pod.
    type Labels = BTreeMap<String, String>;
    let table: Vec<(&Pod, Option<&Labels>, String)> = vec![
        (&plain, Some(&opted_in), restart.clone()),
        // Namespace labels unknown: nothing to say about them.
        (&plain, None, restart.clone()),
        (
            &plain,
            Some(&not_opted_in),
            format!(
                "kubectl label namespace {NS} mcpguard.dev/injection=enabled --overwrite, then {restart}"
            ),
        ),
        (
            &opted_out,
            Some(&opted_in),
            format!(
                "remove the label mcpguard.dev/inject=false from pod weather-5f6d-a (or its template), then \
                 {restart}"
            ),
        ),
        (
            &opted_out,
            Some(&not_opted_in),
            format!(
                "kubectl label namespace {NS} mcpguard.dev/injection=enabled --overwrite, then {restart}"
            ),
        ),
        (
            &host_network,
            Some(&not_opted_in),
            "none while it uses the host network (never injected): run it without hostNetwork".into(),
        ),
    ];
    for (i, (pod, ns_labels, want)) in table.into_iter().enumerate() {
        let found = unguarded(&[pod], ns_labels);
        assert_eq!(found.len(), 1, "case {i}");
        assert_eq!(found[0].command(), want, "case {i}");
    }
}
