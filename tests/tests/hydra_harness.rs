//! The OAuth tests' authorization server itself (tests/hydra_common): Ory Hydra starts, publishes its issuer and
//! keys, issues JWT access tokens for a requested audience, and after a key rotation signs with the new key.

mod hydra_common;

use hydra_common::{Hydra, audiences, jwt_claims, jwt_header};

#[test]
fn hydra_issues_jwt_access_tokens_for_an_audience_and_rotates_its_key() {
    let hydra = Hydra::start().expect("start Hydra");
    let issuer = hydra.issuer();

    let discovery = hydra.discovery().expect("discovery document");
    assert_eq!(discovery["issuer"], issuer.as_str(), "discovery: {discovery}");
    assert_eq!(
        discovery["jwks_uri"],
        format!("{issuer}/.well-known/jwks.json"),
        "discovery: {discovery}"
    );
    assert!(
        discovery["grant_types_supported"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "client_credentials")),
        "client_credentials not offered: {discovery}"
    );

    let resource = "http://127.0.0.1:9/mcp";
    let other = "http://127.0.0.1:10/mcp";
    let client = hydra
        .client_credentials_client(&[resource, other], &["mcp", "mcp:tools"])
        .expect("register a client_credentials client");

    let token = hydra.token(&client, &[resource], &["mcp"]).expect("token");
    let header = jwt_header(&token).expect("token header");
    let claims = jwt_claims(&token).expect("token claims");
    assert_eq!(header["alg"], "RS256", "header: {header}");
    assert_eq!(claims["iss"], issuer.as_str(), "claims: {claims}");
    assert_eq!(
        audiences(&claims),
        [resource],
        "aud is the requested audience only: {claims}"
    );
    assert_eq!(claims["client_id"], client.id.as_str(), "claims: {claims}");
    assert_eq!(claims["scp"], serde_json::json!(["mcp"]), "claims: {claims}");
    let first_kid = header["kid"].as_str().expect("kid").to_owned();
    let published: Vec<String> = hydra.jwks().expect("jwks")["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect();
    assert!(
        published.contains(&first_kid),
        "the signing key {first_kid} is published: {published:?}"
    );

    // An audience the client may not ask for is refused, so a test's "token for another resource" is one
    // Hydra deliberately issued.
    let refused = hydra.token(&client, &["http://127.0.0.1:11/mcp"], &[]);
    assert!(
        refused.is_err(),
        "an audience not on the client's list: {refused:?}"
    );

    hydra
        .rotate_signing_key("rotated-key-1")
        .expect("rotate the signing key");
    let after = hydra.token(&client, &[other], &[]).expect("token after rotation");
    assert_eq!(
        jwt_header(&after).expect("header")["kid"],
        "rotated-key-1",
        "the new key signs new tokens"
    );
    assert_ne!(first_kid, "rotated-key-1");
    assert_eq!(audiences(&jwt_claims(&after).expect("claims")), [other]);
    assert_eq!(hydra.signing_key_ids().expect("keys"), ["rotated-key-1"]);
}
