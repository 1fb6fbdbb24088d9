//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, pinned in tests/mcp/package.json)
//! against `@modelcontextprotocol/server-everything`, directly and through the guard.

use testkit::mcp::{Everything, GuardOptions, run_conformance};

/// Every scenario that passes directly passes through the guard, and `dns-rebinding-protection` — which this
/// upstream fails on its own, since it accepts any Host — passes through the guard.
#[test]
fn conformance_through_the_guard_matches_direct_and_adds_dns_rebinding_protection() {
    let upstream = Everything::start().expect("start server-everything");
    // The scenario `dns-rebinding-protection` needs a localhost URL.
    let direct =
        run_conformance(&format!("http://localhost:{}/mcp", upstream.port), None).expect("run directly");

    let guard = GuardOptions::hosts(&["localhost", "127.0.0.1"])
        .start(&upstream.base_url())
        .expect("start mcp-guard");
    let guarded = run_conformance(&format!("http://localhost:{}/mcp", guard.addr.port()), None)
        .expect("run through guard");

    let direct_passing = direct.passing();
    eprintln!(
        "direct: {} scenarios, passing: {direct_passing:?}",
        direct.scenarios.len()
    );
    eprintln!(
        "through the guard: {} scenarios, passing: {:?}",
        guarded.scenarios.len(),
        guarded.passing()
    );
    // The suite really ran: the upstream passes a good share of it on its own.
    assert!(
        direct.scenarios.len() >= 20,
        "scenarios run directly: {:?}",
        direct.scenarios.keys()
    );
    assert!(
        direct_passing.len() >= 8,
        "scenarios passing directly: {direct_passing:?}\n{}",
        direct.output
    );
    assert_eq!(
        direct.scenarios.keys().collect::<Vec<_>>(),
        guarded.scenarios.keys().collect::<Vec<_>>(),
        "the same scenarios ran both ways"
    );

    let regressions: Vec<String> = direct_passing
        .iter()
        .filter(|name| !guarded.scenarios.get(*name).is_some_and(|r| r.passes()))
        .map(|name| format!("{name}: {:?}", guarded.scenarios.get(name)))
        .collect();
    assert!(
        regressions.is_empty(),
        "scenarios that pass directly but not through the guard: {regressions:#?}"
    );
    let direct_checks: usize = direct_passing.iter().map(|n| direct.scenarios[n].passed).sum();
    let guarded_checks: usize = direct_passing.iter().map(|n| guarded.scenarios[n].passed).sum();
    assert_eq!(
        direct_checks, guarded_checks,
        "passed checks in those scenarios, direct vs through the guard"
    );

    let dns_direct = &direct.scenarios["dns-rebinding-protection"];
    assert!(
        !dns_direct.passes(),
        "server-everything does not protect itself: {dns_direct:?}"
    );
    let dns_guarded = &guarded.scenarios["dns-rebinding-protection"];
    assert!(
        dns_guarded.passes(),
        "dns-rebinding-protection through the guard: {dns_guarded:?}"
    );
    assert_eq!(
        dns_guarded.passed, 2,
        "both checks (foreign Host refused, localhost accepted): {dns_guarded:?}"
    );
}

/// The production shape, nginx → guard → server: the suite sees the same results as through the guard alone.
#[test]
fn conformance_through_nginx_and_the_guard() {
    let upstream = Everything::start().expect("start server-everything");
    let guard = GuardOptions::hosts(&["localhost"])
        .start(&upstream.base_url())
        .expect("start mcp-guard");
    let nginx = testkit::nginx::Nginx::reverse_proxy(&guard.base_url()).expect("start nginx");
    let direct =
        run_conformance(&format!("http://localhost:{}/mcp", upstream.port), None).expect("run directly");
    let proxied =
        run_conformance(&format!("http://localhost:{}/mcp", nginx.port), None).expect("run through nginx");
    let mut expected = direct.passing();
    expected.push("dns-rebinding-protection".to_string());
    expected.sort();
    assert!(expected.len() >= 9, "scenarios passing directly: {expected:?}");
    let missing: Vec<&String> = expected
        .iter()
        .filter(|n| !proxied.passing().contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "scenarios passing directly (plus dns-rebinding-protection) but not via nginx and the guard: {missing:?}\n{:#?}",
        proxied.scenarios
    );
}
