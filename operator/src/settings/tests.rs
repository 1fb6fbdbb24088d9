use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::crd::{
    InjectionSpec, NetworkPolicySettings, NetworkSpec, PolicyLimits, PolicyTrafficSpec, RateSpec,
    SidecarSpec, TrafficSpec,
};

fn rate(n: i32) -> RateSpec {
    RateSpec {
        requests_per_minute: n,
        burst: None,
    }
}

#[test]
fn a_missing_policy_means_the_built_in_defaults() {
    let spec = MCPServerSpec {
        port: 8000,
        ..Default::default()
    };
    let s = resolve(&spec, None, "img");
    assert_eq!(s.mode, GuardMode::Enforce);
    assert_eq!(s.layout, TrafficLayout::SharedPort);
    assert_eq!((s.server_port, s.guarded_port), (8000, 8000));
    assert_eq!(s.limits, Limits::default());
    assert!(s.network.enabled, "NetworkPolicies are on by default");
    assert_eq!(s.sidecar.image, "img");
    assert_eq!(s.native_sidecars, None);
}

#[test]
fn the_server_wins_over_its_policy_setting_by_setting() {
    let policy = MCPGuardPolicySpec {
        default_mode: Some(GuardMode::Audit),
        traffic: Some(PolicyTrafficSpec {
            default_layout: Some(TrafficLayout::GuardPort),
        }),
        limits: Some(PolicyLimits {
            max_request_body_bytes: Some(1024),
        }),
        rate_limits: Some(RateLimitSpec {
            per_client: Some(rate(60)),
            per_method: BTreeMap::from([("tools/call".into(), rate(10))]),
            ..Default::default()
        }),
        trusted_proxies: vec!["10.0.0.0/8".into(), "not a cidr".into()],
        sidecar: Some(SidecarSpec {
            image: Some("policy-img".into()),
            log_level: Some(LogLevel::Debug),
            ..Default::default()
        }),
        injection: Some(InjectionSpec {
            native_sidecars: Some(NativeSidecars::Never),
        }),
        network_policy: Some(NetworkPolicySettings {
            enabled: false,
            admin_ingress_from: Vec::new(),
        }),
        ..Default::default()
    };
    let spec = MCPServerSpec {
        port: 8000,
        mode: Some(GuardMode::Enforce),
        rate_limits: Some(RateLimitSpec {
            per_client: Some(rate(5)),
            ..Default::default()
        }),
        trusted_proxies: vec!["10.0.0.0/8".into(), "192.168.0.0/16".into()],
        traffic: Some(TrafficSpec {
            layout: None,
            guard_port: Some(18000),
        }),
        network: Some(NetworkSpec {
            ingress_from: Vec::new(),
            additional_ports: vec![k8s_openapi::api::networking::v1::NetworkPolicyPort {
                port: Some(IntOrString::Int(9090)),
                ..Default::default()
            }],
        }),
        ..Default::default()
    };
    let s = resolve(&spec, Some(&policy), "img");
    assert_eq!(s.mode, GuardMode::Enforce, "the server's mode");
    assert_eq!(s.layout, TrafficLayout::GuardPort, "the policy's default layout");
    assert_eq!(s.guarded_port, 18000, "GuardPort: the guard's own port");
    assert_eq!(s.limits.max_request_body_bytes, Some(1024));
    assert_eq!(s.limits.per_client.map(|r| r.requests_per_minute), Some(5));
    assert_eq!(
        s.limits.per_method.len(),
        1,
        "the policy's per-method limit is kept"
    );
    assert_eq!(s.trusted_proxies, vec!["10.0.0.0/8", "192.168.0.0/16"]);
    assert_eq!(s.rejected_proxies.len(), 1, "{:?}", s.rejected_proxies);
    assert!(s.rejected_proxies[0].contains("\"not a cidr\" from MCPGuardPolicy"));
    assert_eq!(s.sidecar.image, "policy-img");
    assert_eq!(s.sidecar.log_level.as_deref(), Some("debug"));
    assert_eq!(s.native_sidecars, Some(false));
    assert!(!s.network.enabled);
    assert_eq!(s.network.additional_ports.len(), 1);
}

#[test]
fn cors_is_off_unless_the_server_or_its_policy_turns_it_on() {
    use crate::crd::CorsSpec;
    let on = |enabled| Some(CorsSpec { enabled });
    let spec = |cors| MCPServerSpec {
        port: 8000,
        cors,
        ..Default::default()
    };
    let policy = |cors| MCPGuardPolicySpec {
        cors,
        ..Default::default()
    };
    assert!(!resolve(&spec(None), None, "img").cors);
    assert!(!resolve(&spec(on(None)), Some(&policy(on(None))), "img").cors);
    assert!(resolve(&spec(None), Some(&policy(on(Some(true)))), "img").cors);
    assert!(resolve(&spec(on(Some(true))), None, "img").cors);
    // The server's own setting wins either way.
    assert!(!resolve(&spec(on(Some(false))), Some(&policy(on(Some(true)))), "img").cors);
    assert!(resolve(&spec(on(Some(true))), Some(&policy(on(Some(false)))), "img").cors);
    // An empty `cors: {}` on the server leaves it to the policy.
    assert!(resolve(&spec(on(None)), Some(&policy(on(Some(true)))), "img").cors);
}
