use super::*;
use crate::crd::ServerRef;
use crate::sources::testkit::*;
use crate::sources::{DependencyIndex, pods, services};

/// Their server `fetch` as their controller leaves it: port 8080, Service `fetch`.
fn theirs(name: &str, port: i32) -> SigMCPServer {
    let mut s = SigMCPServer::new(
        name,
        SigMCPServerSpec {
            config: SigServerConfig { port },
        },
    );
    s.metadata.namespace = Some(NS.into());
    s.status = Some(SigMCPServerStatus {
        service_name: Some(name.into()),
    });
    s
}

/// Their Service: selects `mcp-server: <name>`, port 8080 to the named port `mcp`.
fn their_service(name: &str) -> Service {
    service(
        name,
        &[(SERVER_LABEL, name)],
        vec![sport(8080, Some(IntOrString::String("mcp".into())), Some("mcp"))],
    )
}

fn referencing(name: &str) -> MCPServerSpec {
    MCPServerSpec {
        server_ref: Some(ServerRef {
            api_group: GROUP.into(),
            kind: "MCPServer".into(),
            name: name.into(),
        }),
        ..Default::default()
    }
}

fn ours(name: &str, spec: MCPServerSpec) -> MCPServer {
    let mut s = MCPServer::new(name, spec);
    s.metadata.namespace = Some(NS.into());
    s
}

#[test]
fn a_reference_stands_for_their_selector_port_and_the_guard_port_layout() {
    let plain = spec(&[("app", "weather")]);
    assert!(
        matches!(effective(&plain, None), Cow::Borrowed(_)),
        "no reference: unchanged"
    );

    let (fetch, reference) = (theirs("fetch", 8080), referencing("fetch"));
    let e = effective(&reference, Some(&fetch));
    assert_eq!(e.selector, selector_for("fetch"));
    assert_eq!(e.selector.match_labels, Some(labels(&[("mcp-server", "fetch")])));
    assert_eq!(e.port, 8080);
    let settings = crate::settings::resolve(&e, None, "img");
    assert_eq!(settings.layout, TrafficLayout::GuardPort);
    assert_eq!((settings.server_port, settings.guarded_port), (8080, 15080));

    // Not found yet: their pods are still known, the port is not.
    let e = effective(&reference, None);
    assert_eq!((e.selector.clone(), e.port), (selector_for("fetch"), 0));

    // The user's own guard port is kept.
    let mut with_port = referencing("fetch");
    with_port.traffic = Some(TrafficSpec {
        layout: Some(TrafficLayout::GuardPort),
        guard_port: Some(9000),
    });
    let settings = crate::settings::resolve(&effective(&with_port, Some(&fetch)), None, "img");
    assert_eq!(settings.guarded_port, 9000);
}

#[test]
fn their_service_names_and_handshake_host_are_allowed() {
    let world = World {
        services: vec![their_service("fetch"), web_service()],
        sig_server: Some(theirs("fetch", 8080)),
        ..Default::default()
    };
    let d = world.derive(&referencing("fetch"));
    assert_eq!(
        values(&d.hosts),
        vec![
            "fetch",
            "fetch.team-a",
            "fetch.team-a.svc",
            "fetch.team-a.svc.cluster.local",
            "fetch.team-a.svc.cluster.local:8080",
        ]
    );
    assert_eq!(
        sources_of(&d.hosts, "fetch.team-a.svc.cluster.local:8080"),
        vec!["MCPServer.mcp.x-k8s.io team-a/fetch (its controller's handshake)"]
    );
    assert_eq!(d.services, vec!["fetch"], "their Service only, not another app's");
    assert!(d.findings.is_empty(), "{:?}", d.findings);
    assert!(
        d.dependencies
            .contains(&Dependency::new(DepKind::SigMCPServer, Some(NS), "fetch"))
    );

    // The policy leaves Service DNS names out: their handshake still passes.
    let world = World {
        policy: no_dns(),
        ..world
    };
    let d = world.derive(&referencing("fetch"));
    assert_eq!(values(&d.hosts), vec!["fetch.team-a.svc.cluster.local:8080"]);
}

#[test]
fn their_handshake_goes_to_the_service_their_status_names() {
    let mut fetch = theirs("fetch", 3000);
    fetch.status = Some(SigMCPServerStatus {
        service_name: Some("fetch-svc".into()),
    });
    let world = World {
        sig_server: Some(fetch),
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&referencing("fetch"));
    assert_eq!(values(&d.hosts), vec!["fetch-svc.team-a.svc.cluster.local:3000"]);
}

#[test]
fn problems_name_the_reference_and_the_fix() {
    // (their server, words the problem must contain)
    let cases: Vec<(Option<SigMCPServer>, &[&str])> = vec![
        (
            None,
            &[
                "MCPServer.mcp.x-k8s.io team-a/fetch",
                "spec.serverRef",
                "does not exist",
            ],
        ),
        (Some(theirs("fetch", 0)), &["spec.config.port", "got 0"]),
        (
            Some(theirs("fetch", 15080)),
            &["port 15080", "spec.traffic.guardPort"],
        ),
    ];
    for (i, (sig_server, want)) in cases.into_iter().enumerate() {
        let world = World {
            services: vec![their_service("fetch")],
            sig_server,
            policy: no_dns(),
            ..Default::default()
        };
        let d = world.derive(&referencing("fetch"));
        let problems = d.messages(FindingKind::Problem);
        assert_eq!(problems.len(), 1, "case {i}: {problems:?}");
        for w in want {
            assert!(
                problems[0].contains(w),
                "case {i}: {w:?} not in {:?}",
                problems[0]
            );
        }
        assert!(
            d.dependencies
                .contains(&Dependency::new(DepKind::SigMCPServer, Some(NS), "fetch")),
            "case {i}: its creation or change must re-derive"
        );
    }
}

#[test]
fn reverse_mappers_reach_the_servers_that_reference_it() {
    let cache = Cache {
        servers: vec![
            ours("guard-fetch", referencing("fetch")),
            ours("guard-other", referencing("other")),
            server(NS, "plain", &[("app", "weather")]),
        ],
        sig_servers: vec![theirs("fetch", 8080)],
        ..Default::default()
    };
    let stores = cache.stores();
    let index = DependencyIndex::default();
    let want = vec!["team-a/guard-fetch".to_string()];
    // Their MCPServer.
    assert_eq!(names(map(&stores, &index, &theirs("fetch", 8080))), want);
    // Their Service and their pods reach the referencing server by the selector the reference stands for.
    assert_eq!(
        names(services::map(&stores, &index, &their_service("fetch"))),
        want
    );
    let pod = labelled_pod(NS, "fetch-1", &[("app", "mcp-server"), ("mcp-server", "fetch")]);
    assert_eq!(names(pods::map(&stores, &index, &pod)), want);
    // Another namespace's server of the same name concerns none of them.
    let mut elsewhere = theirs("fetch", 8080);
    elsewhere.metadata.namespace = Some("team-b".into());
    assert!(map(&stores, &index, &elsewhere).is_empty());
}

#[test]
fn resolved_servers_keep_everything_but_the_resolved_fields() {
    let cache = Cache {
        servers: vec![ours("guard-fetch", referencing("fetch"))],
        sig_servers: vec![theirs("fetch", 8080)],
        ..Default::default()
    };
    let stores = cache.stores();
    let guard = &cache.servers[0];
    let r = resolved(guard, &stores);
    assert_eq!(r.spec.port, 8080);
    assert_eq!(r.spec.server_ref, guard.spec.server_ref);
    assert_eq!(r.metadata, guard.metadata);
    let plain = server(NS, "plain", &[("app", "weather")]);
    assert!(matches!(resolved(&plain, &stores), Cow::Borrowed(_)));
}
