use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::testing::{self, TestKey};
use super::*;
use crate::host::Authority;

const ISSUER: &str = "https://auth.example.com";
const NOW: u64 = 1_800_000_000;

/// Keys the guard holds, per issuer.
#[derive(Default)]
struct Keys(HashMap<String, Arc<KeySet>>);

impl KeySource for Keys {
    fn keys(&self, issuer: &str) -> Option<Arc<KeySet>> {
        self.0.get(issuer).cloned()
    }
}

fn keys_of(issuer: &str, keys: &[&TestKey]) -> Keys {
    let set = KeySet::from_jwks_json(testing::jwks(keys).to_string().as_bytes()).unwrap();
    Keys(HashMap::from([(issuer.to_owned(), Arc::new(set))]))
}

fn config() -> AuthConfig {
    AuthConfig {
        resources: vec![
            "https://mcp.example.com/mcp".into(),
            "https://*.apps.example.com/mcp".into(),
            "http://weather.team-a.svc:8080/mcp".into(),
        ],
        issuers: vec![IssuerConfig {
            issuer: ISSUER.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn policy() -> AuthPolicy {
    config().compile().unwrap()
}

fn resource(policy: &AuthPolicy, host: &str) -> Resource {
    policy.resource_for(&Authority::parse(host).unwrap()).unwrap()
}

fn claims() -> Value {
    json!({"iss": ISSUER, "sub": "user-1", "client_id": "agent", "aud": ["https://mcp.example.com/mcp"],
           "exp": NOW + 300, "iat": NOW, "scope": "mcp tools"})
}

fn check(
    policy: &AuthPolicy,
    keys: &Keys,
    authorization: &[&str],
    query: Option<&str>,
) -> Result<Identity, AuthDenial> {
    let values: Vec<&[u8]> = authorization.iter().map(|v| v.as_bytes()).collect();
    let credentials = Credentials {
        authorization: &values,
        query,
    };
    policy.authenticate(credentials, &resource(policy, "mcp.example.com"), keys, NOW)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn refused(r: Result<Identity, AuthDenial>) -> AuthDenial {
    r.expect_err("the token must be refused")
}

#[test]
fn accepts_tokens_of_each_key_type_and_reads_the_identity() {
    let p = policy();
    for key in [TestKey::es256("k1"), TestKey::rs256("k1"), TestKey::ed25519("k1")] {
        let keys = keys_of(ISSUER, &[&key]);
        let id = check(&p, &keys, &[&bearer(&key.sign(&claims()))], None).unwrap();
        assert_eq!(id.issuer, ISSUER, "{}", key.alg());
        assert_eq!(id.subject.as_deref(), Some("user-1"));
        assert_eq!(id.client_id.as_deref(), Some("agent"));
        assert_eq!(id.scopes, ["mcp", "tools"]);
        assert_eq!(id.expires_at, NOW + 300);
        assert_eq!(id.service_account, None);
    }
}

#[test]
fn the_resource_uri_comes_from_the_host_the_request_used() {
    let p = policy();
    assert_eq!(resource(&p, "MCP.Example.com").uri, "https://mcp.example.com/mcp");
    assert_eq!(
        resource(&p, "mcp.example.com:443").uri,
        "https://mcp.example.com/mcp"
    );
    assert_eq!(
        resource(&p, "mcp.example.com:8443").uri,
        "https://mcp.example.com:8443/mcp"
    );
    assert_eq!(
        resource(&p, "a.apps.example.com").uri,
        "https://a.apps.example.com/mcp"
    );
    assert_eq!(
        resource(&p, "weather.team-a.svc:8080").uri,
        "http://weather.team-a.svc:8080/mcp"
    );
    let r = resource(&p, "mcp.example.com");
    assert_eq!(
        r.metadata_url(),
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    for host in [
        "other.example.com",
        "a.b.apps.example.com",
        "weather.team-a.svc:9090",
    ] {
        assert_eq!(p.resource_for(&Authority::parse(host).unwrap()), None, "{host}");
    }
}

#[test]
fn metadata_names_the_resource_its_servers_and_scopes() {
    let mut c = config();
    c.issuers.push(IssuerConfig {
        issuer: "https://kubernetes.default.svc.cluster.local".into(),
        kubernetes: true,
        jwks: Some(testing::jwks(&[&TestKey::es256("sa")])),
        ..Default::default()
    });
    c.tool_scopes.insert("deploy".into(), vec!["deploy:write".into()]);
    c.required_scopes = vec!["mcp".into()];
    let p = c.compile().unwrap();
    let doc = p.metadata(&resource(&p, "x.apps.example.com"));
    assert_eq!(
        doc,
        json!({"resource": "https://x.apps.example.com/mcp", "authorization_servers": [ISSUER],
               "bearer_methods_supported": ["header"], "scopes_supported": ["deploy:write", "mcp"]})
    );
    let r = resource(&p, "mcp.example.com");
    for path in [METADATA_PATH, "/.well-known/oauth-protected-resource/mcp"] {
        assert!(AuthPolicy::is_metadata_path(path, &r), "{path}");
    }
    for path in [
        "/mcp",
        "/.well-known/oauth-protected-resource/other",
        "/.well-known/oauth-protected-resourcex",
    ] {
        assert!(!AuthPolicy::is_metadata_path(path, &r), "{path}");
    }
}

#[test]
fn hostile_tokens_are_refused_with_their_reason() {
    let p = policy();
    let key = TestKey::es256("k1");
    let keys = keys_of(ISSUER, &[&key]);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        key.sign(&c)
    };
    let stranger = TestKey::es256("k1");
    let good = key.sign(&claims());
    let cases: Vec<(&str, String, Reason)> = vec![
        (
            "alg none",
            testing::with_signature(&json!({"alg": "none", "kid": "k1"}), &claims(), b""),
            Reason::InvalidToken,
        ),
        (
            "alg none, a signature",
            testing::with_signature(&json!({"alg": "none"}), &claims(), b"x"),
            Reason::InvalidToken,
        ),
        (
            "HS256 with the public key",
            testing::hs256(&key.public_bytes(), &claims(), "k1"),
            Reason::InvalidToken,
        ),
        (
            "wrong aud",
            with(&|c| c["aud"] = json!("https://other.example.com/mcp")),
            Reason::TokenAudienceMismatch,
        ),
        (
            "no aud",
            with(&|c| drop(c.as_object_mut().unwrap().remove("aud"))),
            Reason::TokenAudienceMismatch,
        ),
        (
            "another resource, same host",
            with(&|c| c["aud"] = json!("https://mcp.example.com/other")),
            Reason::TokenAudienceMismatch,
        ),
        (
            "wrong iss",
            with(&|c| c["iss"] = json!("https://evil.example.com")),
            Reason::InvalidToken,
        ),
        (
            "iss with a trailing slash",
            with(&|c| c["iss"] = json!(format!("{ISSUER}/"))),
            Reason::InvalidToken,
        ),
        (
            "expired",
            with(&|c| c["exp"] = json!(NOW - 61)),
            Reason::TokenExpired,
        ),
        (
            "no exp",
            with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
            Reason::InvalidToken,
        ),
        (
            "exp a string",
            with(&|c| c["exp"] = json!("1900000000")),
            Reason::InvalidToken,
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(NOW + 61)),
            Reason::TokenNotYetValid,
        ),
        (
            "a stranger's key, the same kid",
            stranger.sign(&claims()),
            Reason::InvalidToken,
        ),
        (
            "truncated",
            good[..good.len() - 10].to_owned(),
            Reason::InvalidToken,
        ),
        (
            "two parts",
            good.rsplit_once('.').unwrap().0.to_owned(),
            Reason::InvalidToken,
        ),
        (
            "oversized",
            format!("{good}{}", "A".repeat(MAX_TOKEN_BYTES)),
            Reason::InvalidToken,
        ),
        ("padded base64", format!("{good}=="), Reason::InvalidToken),
        (
            "typ id token",
            key.sign_with_header(
                &json!({"alg": "ES256", "kid": "k1", "typ": "id_token+jwt"}),
                &claims(),
            ),
            Reason::InvalidToken,
        ),
        (
            "crit",
            key.sign_with_header(&json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}), &claims()),
            Reason::InvalidToken,
        ),
    ];
    for (name, token, reason) in cases {
        let denial = refused(check(&p, &keys, &[&bearer(&token)], None));
        assert_eq!(denial.error.reason(), reason, "{name}: {denial:?}");
        assert!(!denial.received.contains(&token), "{name}: the token is echoed");
    }
}

#[test]
fn requests_without_a_usable_token_say_why() {
    let p = policy();
    let key = TestKey::es256("k1");
    let keys = keys_of(ISSUER, &[&key]);
    let good = bearer(&key.sign(&claims()));
    let reason = |auth: &[&str], query| refused(check(&p, &keys, auth, query)).error.reason();
    assert_eq!(reason(&[], None), Reason::Unauthenticated);
    assert_eq!(reason(&["Basic dXNlcjpwYXNz"], None), Reason::Unauthenticated);
    assert_eq!(reason(&["Bearer "], None), Reason::Unauthenticated);
    assert_eq!(reason(&[&good, &good], None), Reason::InvalidAuthRequest);
    assert_eq!(
        reason(&[&good], Some("x=1&access_token=abc")),
        Reason::InvalidAuthRequest
    );
    assert_eq!(reason(&[], Some("access_token=abc")), Reason::InvalidAuthRequest);
    // The scheme is case-insensitive (RFC 6750 §2.1, RFC 9110 §11.1).
    let lower = format!("bearer {}", key.sign(&claims()));
    assert!(check(&p, &keys, &[&lower], Some("x=access_token")).is_ok());
}

#[test]
fn keys_the_guard_lacks_are_told_apart_from_bad_signatures() {
    let p = policy();
    let key = TestKey::es256("k1");
    let token = bearer(&key.sign(&claims()));
    assert_eq!(
        refused(check(&p, &Keys::default(), &[&token], None)).error,
        AuthError::KeysUnavailable
    );
    let rotated = keys_of(ISSUER, &[&TestKey::es256("k2")]);
    assert_eq!(
        refused(check(&p, &rotated, &[&token], None)).error,
        AuthError::UnknownKey
    );
    // An RS256 token against an issuer that only allows ES256.
    let mut c = config();
    c.issuers[0].algorithms = vec!["ES256".into()];
    let only_es = c.compile().unwrap();
    let rsa = TestKey::rs256("r1");
    let denial = refused(check(
        &only_es,
        &keys_of(ISSUER, &[&rsa]),
        &[&bearer(&rsa.sign(&claims()))],
        None,
    ));
    assert_eq!(denial.error.reason(), Reason::InvalidToken);
    assert!(denial.received.contains("RS256 is not allowed"), "{denial:?}");
}

#[test]
fn an_issuer_whose_keys_are_not_known_yet_refuses_its_tokens() {
    let mut c = config();
    c.issuers[0].jwks = Some(json!({"keys": []}));
    let p = c.compile().unwrap();
    let key = TestKey::es256("k1");
    let denial = refused(check(
        &p,
        &keys_of(ISSUER, &[&key]),
        &[&bearer(&key.sign(&claims()))],
        None,
    ));
    assert_eq!(denial.error, AuthError::KeysUnavailable);
    // A document whose keys are all unusable is still an error: only an explicit empty set means "not yet".
    c.issuers[0].jwks = Some(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}));
    assert!(c.compile().is_err());
}

#[test]
fn the_clock_skew_is_allowed_both_ways() {
    let p = policy();
    let key = TestKey::es256("k1");
    let keys = keys_of(ISSUER, &[&key]);
    let mut c = claims();
    c["exp"] = json!(NOW - 60);
    c["nbf"] = json!(NOW + 60);
    assert!(check(&p, &keys, &[&bearer(&key.sign(&c))], None).is_ok());
}

#[test]
fn configured_audiences_are_accepted_and_audiences_compare_canonically() {
    let mut c = config();
    c.issuers[0].audiences = vec!["api://mcp".into()];
    let p = c.compile().unwrap();
    let key = TestKey::es256("k1");
    let keys = keys_of(ISSUER, &[&key]);
    for aud in [
        json!("api://mcp"),
        json!(["x", "HTTPS://MCP.EXAMPLE.COM/mcp/"]),
        json!("https://mcp.example.com:443/mcp"),
    ] {
        let mut cl = claims();
        cl["aud"] = aud.clone();
        assert!(
            check(&p, &keys, &[&bearer(&key.sign(&cl))], None).is_ok(),
            "{aud}"
        );
    }
    // The path is not case-folded: another path is another resource.
    let mut cl = claims();
    cl["aud"] = json!("https://mcp.example.com/MCP");
    assert!(check(&p, &keys, &[&bearer(&key.sign(&cl))], None).is_err());
}

#[test]
fn kubernetes_tokens_name_a_service_account_that_must_be_allowed() {
    const K8S: &str = "https://kubernetes.default.svc.cluster.local";
    let sa_key = TestKey::rs256("sa");
    let mut c = config();
    c.issuers.push(IssuerConfig {
        issuer: K8S.into(),
        kubernetes: true,
        jwks: Some(testing::jwks(&[&sa_key])),
        ..Default::default()
    });
    c.service_accounts = vec!["team-a/agent".into(), "team-b/*".into()];
    c.required_scopes = vec!["mcp".into()];
    let p = c.compile().unwrap();
    let sa_token = |ns: &str, name: &str| {
        bearer(&sa_key.sign(
            &json!({"iss": K8S, "sub": format!("system:serviceaccount:{ns}:{name}"),
            "aud": ["https://mcp.example.com/mcp"], "exp": NOW + 600, "nbf": NOW - 1,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": "u"}}}),
        ))
    };
    // Inline keys: no key source needed.
    let none = Keys::default();
    for (ns, name) in [("team-a", "agent"), ("team-b", "anything")] {
        let id = check(&p, &none, &[&sa_token(ns, name)], None).unwrap();
        assert_eq!(
            id.service_account.as_deref(),
            Some(format!("{ns}/{name}").as_str())
        );
        // Service-account tokens carry no scopes; serviceAccounts governs them.
        assert!(p.authorize(&id, [(Some("tools/call"), Some("x"))]).is_ok());
    }
    let denial = refused(check(&p, &none, &[&sa_token("team-a", "other")], None));
    assert_eq!(denial.error.reason(), Reason::IdentityNotAllowed);
    let no_claim =
        bearer(&sa_key.sign(&json!({"iss": K8S, "aud": "https://mcp.example.com/mcp", "exp": NOW + 1})));
    assert_eq!(
        refused(check(&p, &none, &[&no_claim], None)).error.reason(),
        Reason::InvalidToken
    );
}

#[test]
fn scopes_are_required_per_server_method_and_tool() {
    let mut c = config();
    c.required_scopes = vec!["mcp".into()];
    c.method_scopes.insert("tools/call".into(), vec!["tools".into()]);
    c.tool_scopes.insert("deploy".into(), vec!["deploy:write".into()]);
    let p = c.compile().unwrap();
    let id = |scopes: &[&str]| Identity {
        issuer: ISSUER.into(),
        subject: None,
        client_id: None,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        groups: Vec::new(),
        service_account: None,
        expires_at: NOW + 1,
    };
    assert!(p.authorize(&id(&["mcp"]), [(Some("tools/list"), None)]).is_ok());
    assert!(
        p.authorize(&id(&["mcp", "tools"]), [(Some("tools/call"), Some("read"))])
            .is_ok()
    );
    let denial = p
        .authorize(
            &id(&["mcp", "tools"]),
            [(Some("tools/list"), None), (Some("tools/call"), Some("deploy"))],
        )
        .unwrap_err();
    assert_eq!(denial.error.reason(), Reason::InsufficientScope);
    assert_eq!(denial.scope.as_deref(), Some("deploy:write mcp tools"));
    assert!(
        p.authorize(&id(&[]), []).is_err(),
        "no calls known: the server's scopes still apply"
    );
    let r = resource(&p, "mcp.example.com");
    assert_eq!(
        denial.challenge(&r, None),
        "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", \
         error=\"insufficient_scope\", error_description=\"scopes [mcp tools]\", scope=\"deploy:write mcp tools\""
    );
    let none = AuthDenial::new(AuthError::NoToken, "no Authorization header");
    assert_eq!(
        none.challenge(&r, Some("mcp")),
        "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp\""
    );
}

#[test]
fn challenges_never_carry_quotes_or_control_characters_from_a_token() {
    let r = resource(&policy(), "mcp.example.com");
    let d = AuthDenial::new(AuthError::InvalidToken, "issuer \"evil\\\"\r\nX-Injected: 1");
    let c = d.challenge(&r, None);
    assert!(!c.contains(['\r', '\n', '\\']), "{c}");
    assert_eq!(c.matches('"').count(), 6, "{c}");
}

#[test]
fn bad_sections_are_refused_naming_the_field() {
    let bad = |f: &dyn Fn(&mut AuthConfig)| {
        let mut c = config();
        f(&mut c);
        c.compile().unwrap_err().to_string()
    };
    assert!(bad(&|c| c.resources.clear()).contains("auth.resources is empty"));
    assert!(bad(&|c| c.resources[0] = "mcp.example.com/mcp".into()).contains("auth.resources[0]"));
    assert!(bad(&|c| c.resources[0] = "https://mcp.example.com/mcp?x=1".into()).contains("no query"));
    assert!(bad(&|c| c.resources[0] = "https://*/mcp".into()).contains("auth.resources[0]"));
    assert!(bad(&|c| c.issuers.clear()).contains("auth.issuers is empty"));
    let http = bad(&|c| c.issuers[0].issuer = "http://auth.example.com".into());
    assert!(
        http.contains("auth.issuers[0].issuer") && http.contains("allowHttp"),
        "{http}"
    );
    let mut lab = config();
    lab.issuers[0].issuer = "http://127.0.0.1:4444".into();
    lab.issuers[0].allow_http = true;
    assert!(lab.compile().is_ok());
    assert!(bad(&|c| c.issuers[0].algorithms = vec!["HS256".into()]).contains("HMAC"));
    assert!(bad(&|c| c.issuers[0].algorithms = vec!["none".into()]).contains("unsigned"));
    assert!(
        bad(&|c| c.issuers[0].jwks = Some(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})))
            .contains("no signature key")
    );
    assert!(bad(&|c| c.required_scopes = vec!["a b".into()]).contains("auth.requiredScopes"));
    assert!(bad(&|c| c.service_accounts = vec!["team-a".into()]).contains("auth.serviceAccounts[0]"));
    // Unknown fields are an error too (typos do not go unnoticed).
    let json = r#"{"allowedHosts": ["a"], "auth": {"resources": ["https://a/mcp"], "issuers": [{"issuer": "https://i", "audience": "x"}]}}"#;
    assert!(crate::GuardConfig::from_json(json.as_bytes()).is_err());
}

#[test]
fn jwks_documents_keep_only_signature_keys() {
    let es = TestKey::es256("es");
    let mut doc = testing::jwks(&[&es]);
    let keys = doc["keys"].as_array_mut().unwrap();
    keys.push(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}));
    keys.push(json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}));
    keys.push(json!({"kty": "RSA", "kid": "short", "n": "AQAB", "e": "AQAB"}));
    keys.push(json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}));
    let mut wrong_alg = es.jwk();
    wrong_alg["alg"] = json!("RS256");
    keys.push(wrong_alg);
    let set = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set.skipped.len(), 5, "{:?}", set.skipped);
    let too_many = json!({"keys": vec![es.jwk(); keys::MAX_KEYS + 1]});
    assert_eq!(
        KeySet::from_jwks_json(too_many.to_string().as_bytes()),
        Err(JwksError::TooManyKeys)
    );
    assert!(KeySet::from_jwks_json(b"[]").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// No change to a valid token's bytes makes another token the guard accepts: a flipped bit, a cut, a
    /// swapped or re-encoded part either fails to decode or fails the signature.
    #[test]
    fn no_mutation_of_a_signed_token_is_accepted(
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
        op in 0u8..4,
    ) {
        static KEY: std::sync::OnceLock<TestKey> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(|| TestKey::es256("k1"));
        let p = policy();
        let keys = keys_of(ISSUER, &[key]);
        let token = key.sign(&claims());
        let mut bytes = token.clone().into_bytes();
        match op {
            0 => { let i = position.index(bytes.len()); bytes[i] ^= 1 << bit; }
            1 => { bytes.truncate(cut.index(bytes.len())); }
            2 => { let i = position.index(bytes.len()); bytes.insert(i, b"A.=_-+/ "[bit as usize]); }
            _ => {
                // Another token's claims under this token's signature.
                let (head, rest) = token.split_once('.').unwrap();
                let sig = rest.rsplit_once('.').unwrap().1;
                let mut other = claims();
                other["sub"] = json!(format!("user-{}", position.index(1000)));
                other["aud"] = json!("https://mcp.example.com/mcp");
                let forged = testing::signing_input(&json!({}), &other);
                let claims_part = forged.split_once('.').unwrap().1;
                bytes = format!("{head}.{claims_part}.{sig}").into_bytes();
            }
        }
        let mutated = String::from_utf8_lossy(&bytes).into_owned();
        // `Bearer 1*SP b64token` (RFC 6750 §2.1): spaces around the token leave the same token.
        prop_assume!(mutated.trim_matches(' ') != token);
        let result = check(&p, &keys, &[&bearer(&mutated)], None);
        prop_assert!(result.is_err(), "accepted a mutated token: {mutated}");
    }
}

/// `caBundle` holds CA certificates and nothing else: a bundle without one, or with a key pasted into it, is
/// refused with the issuer's index and what is wrong; the certificates are kept, in order, for the TLS client.
#[test]
fn a_ca_bundle_is_certificates_only() {
    let block = |kind: &str, b64: &str| format!("-----BEGIN {kind}-----\n{b64}\n-----END {kind}-----\n");
    let compile = |bundle: &str| {
        let mut c = config();
        c.issuers[0].ca_bundle = Some(bundle.to_string());
        c.compile()
    };
    let two = format!(
        "a comment\n{}{}",
        block("CERTIFICATE", "AQID"),
        block("CERTIFICATE", "BAUG")
    );
    let p = compile(&two).unwrap();
    let certs: Vec<&[u8]> = p.issuers()[0].ca_certs.iter().map(|c| c.as_ref()).collect();
    assert_eq!(certs, [&[1u8, 2, 3][..], &[4, 5, 6]]);
    for (bundle, want) in [
        ("no pem at all".to_string(), "no PEM certificate"),
        (String::new(), "no PEM certificate"),
        (
            format!("{}{}", block("CERTIFICATE", "AQID"), block("PRIVATE KEY", "AQID")),
            "never a key",
        ),
        (block("CERTIFICATE", "!!not base64!!"), "not PEM"),
    ] {
        let err = compile(&bundle).unwrap_err().to_string();
        assert!(
            err.starts_with("auth.issuers[0]: caBundle: "),
            "{bundle:?}: {err}"
        );
        assert!(err.contains(want), "{bundle:?}: {err}");
    }
}
