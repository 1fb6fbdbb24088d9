//! The NetworkPolicy the operator keeps per MCPServer (`<name>-mcp-guard`, owned by it): the pods admit ingress
//! only on the guard's port (from `spec.network.ingressFrom`, default every source), the guard's admin port (from
//! the policy's `networkPolicy.adminIngressFrom`, default every source) and the MCPServer's
//! `network.additionalPorts`. In the `GuardPort` layout the server's own port is not among them, so no other pod
//! reaches a server bound to all interfaces directly. Pure: the controller writes what [`desired`] returns.
//!
//! Whether it is enforced depends on the cluster's network plugin, which the operator cannot see (docs/operator.md).

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{MCPServer, TrafficLayout, network_policy_name};
use crate::pod_contract::ADMIN_PORT;
use crate::settings::Settings;

/// The NetworkPolicy for a server, or `None` when its policy switches NetworkPolicies off. `labels` mark it as
/// the operator's (its watch is restricted to them).
pub fn desired(
    server: &MCPServer,
    ns: &str,
    settings: &Settings,
    labels: std::collections::BTreeMap<String, String>,
) -> Option<NetworkPolicy> {
    let network = &settings.network;
    if !network.enabled {
        return None;
    }
    let tcp = |port: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let from = |peers: &[NetworkPolicyPeer]| (!peers.is_empty()).then(|| peers.to_vec());
    let mut ingress = vec![
        NetworkPolicyIngressRule {
            ports: Some(vec![tcp(settings.guarded_port)]),
            from: from(&network.ingress_from),
        },
        NetworkPolicyIngressRule {
            ports: Some(vec![tcp(i32::from(ADMIN_PORT))]),
            from: from(&network.admin_ingress_from),
        },
    ];
    if !network.additional_ports.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(network.additional_ports.clone()),
            from: None,
        });
    }
    Some(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(network_policy_name(&server.name_any())),
            namespace: Some(ns.to_string()),
            owner_references: server.controller_owner_ref(&()).map(|o| vec![o]),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(server.spec.selector.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..Default::default()
        }),
    })
}

/// What a NetworkPolicy admits, for the status: `port 8000 (guard) from every source; ...`.
pub fn describe(np: &NetworkPolicy, settings: &Settings) -> String {
    let rules = np.spec.as_ref().and_then(|s| s.ingress.as_ref());
    let parts: Vec<String> = rules
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let ports: Vec<String> = r
                .ports
                .iter()
                .flatten()
                .map(|p| match &p.port {
                    Some(IntOrString::Int(n)) => n.to_string(),
                    Some(IntOrString::String(s)) => s.clone(),
                    None => "every port".into(),
                })
                .collect();
            let what = match i {
                0 => " (guard)",
                1 => " (guard admin)",
                _ => " (network.additionalPorts)",
            };
            let from = match r.from.as_ref().map(Vec::len) {
                None | Some(0) => "every source".to_string(),
                Some(n) => format!("{n} listed peer(s)"),
            };
            format!("port {}{what} from {from}", ports.join(", "))
        })
        .collect();
    let mut s = format!("admits ingress only on {}", parts.join("; "));
    if settings.layout == TrafficLayout::GuardPort {
        s.push_str(&format!(
            "; the server's own port {} is closed to other pods",
            settings.server_port
        ));
    }
    s
}

/// Whether the existing object already says what `desired` says (no write needed).
pub fn is_current(existing: Option<&NetworkPolicy>, desired: &NetworkPolicy) -> bool {
    let Some(existing) = existing else { return false };
    existing.spec == desired.spec && crate::children::metadata_current(&existing.metadata, &desired.metadata)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;
    use crate::crd::{
        MCPGuardPolicySpec, MCPServerSpec, NetworkPolicySettings, NetworkSpec, PolicyTrafficSpec, TrafficSpec,
    };

    fn server(traffic: Option<TrafficSpec>, network: Option<NetworkSpec>) -> MCPServer {
        let mut s = MCPServer::new(
            "unifi",
            MCPServerSpec {
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".into(), "unifi".into())])),
                    ..Default::default()
                },
                port: 8080,
                traffic,
                network,
                ..Default::default()
            },
        );
        s.metadata.namespace = Some("team-a".into());
        s.metadata.uid = Some("u-1".into());
        s
    }

    fn resolve(s: &MCPServer, policy: Option<&MCPGuardPolicySpec>) -> Settings {
        crate::settings::resolve(&s.spec, policy, "img")
    }

    fn ports(np: &NetworkPolicy) -> Vec<Vec<i32>> {
        np.spec
            .as_ref()
            .and_then(|s| s.ingress.clone())
            .unwrap_or_default()
            .iter()
            .map(|r| {
                r.ports
                    .iter()
                    .flatten()
                    .filter_map(|p| match p.port {
                        Some(IntOrString::Int(n)) => Some(n),
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn shared_port_admits_the_server_port_and_the_admin_port() {
        let s = server(None, None);
        let np = desired(&s, "team-a", &resolve(&s, None), BTreeMap::new()).expect("on by default");
        assert_eq!(np.metadata.name.as_deref(), Some("unifi-mcp-guard"));
        assert_eq!(
            np.metadata.owner_references.as_ref().map(|o| o[0].uid.as_str()),
            Some("u-1")
        );
        let spec = np.spec.as_ref().expect("spec");
        assert_eq!(spec.pod_selector, Some(s.spec.selector.clone()));
        assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string()][..]));
        assert_eq!(ports(&np), vec![vec![8080], vec![15081]]);
        assert!(spec.ingress.iter().flatten().all(|r| r.from.is_none()));
    }

    #[test]
    fn guard_port_closes_the_server_port_and_takes_peers_and_extra_ports() {
        let peer = NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("name".into(), "ingress-nginx".into())])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = server(
            Some(TrafficSpec {
                layout: Some(TrafficLayout::GuardPort),
                guard_port: Some(18080),
            }),
            Some(NetworkSpec {
                ingress_from: vec![peer.clone()],
                additional_ports: vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(9090)),
                    ..Default::default()
                }],
            }),
        );
        let policy = MCPGuardPolicySpec {
            network_policy: Some(NetworkPolicySettings {
                enabled: true,
                admin_ingress_from: vec![peer.clone()],
            }),
            ..Default::default()
        };
        let np = desired(&s, "team-a", &resolve(&s, Some(&policy)), BTreeMap::new()).expect("enabled");
        assert_eq!(ports(&np), vec![vec![18080], vec![15081], vec![9090]]);
        let rules = np.spec.as_ref().and_then(|s| s.ingress.clone()).expect("rules");
        assert_eq!(rules[0].from, Some(vec![peer.clone()]));
        assert_eq!(rules[1].from, Some(vec![peer]));
        assert_eq!(rules[2].from, None);
        assert!(
            !ports(&np).concat().contains(&8080),
            "the app's own port must not be admitted"
        );
        let text = describe(&np, &resolve(&s, Some(&policy)));
        assert!(
            text.contains("port 18080 (guard) from 1 listed peer(s)"),
            "{text}"
        );
        assert!(text.contains("own port 8080 is closed"), "{text}");
    }

    #[test]
    fn the_policy_default_layout_and_switch() {
        let s = server(None, None);
        let policy = MCPGuardPolicySpec {
            traffic: Some(PolicyTrafficSpec {
                default_layout: Some(TrafficLayout::GuardPort),
            }),
            ..Default::default()
        };
        let np = desired(&s, "team-a", &resolve(&s, Some(&policy)), BTreeMap::new()).expect("enabled");
        assert_eq!(ports(&np), vec![vec![15080], vec![15081]]);
        let off = MCPGuardPolicySpec {
            network_policy: Some(NetworkPolicySettings {
                enabled: false,
                admin_ingress_from: Vec::new(),
            }),
            ..Default::default()
        };
        assert_eq!(
            desired(&s, "team-a", &resolve(&s, Some(&off)), BTreeMap::new()),
            None
        );
        assert!(is_current(Some(&np), &np));
        assert!(!is_current(None, &np));
    }
}
