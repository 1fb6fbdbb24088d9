//! Signing keys for tests (feature `testing`): tokens signed the way issuers sign them, and the hostile ones
//! attackers make (unsigned, HMAC'd with a public key, re-signed by a stranger).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};
use serde_json::{Value, json};

/// A 2048-bit RSA key (PKCS#1 DER) made once with `openssl genpkey` (ring cannot generate RSA keys); for tests only.
const RSA_DER_B64: &str = include_str!("testdata/rsa-2048.der.b64");

enum Pair {
    Es256(sig::EcdsaKeyPair),
    Rs256(sig::RsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

/// A signing key with a `kid`, as an issuer holds it.
pub struct TestKey {
    pub kid: String,
    pair: Pair,
}

impl TestKey {
    /// A new P-256 key.
    pub fn es256(kid: &str) -> TestKey {
        let rng = SystemRandom::new();
        let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        TestKey {
            kid: kid.into(),
            pair: Pair::Es256(pair),
        }
    }

    /// The fixed RSA key (every `rs256` key is the same key, whatever its `kid`).
    pub fn rs256(kid: &str) -> TestKey {
        let der = STANDARD.decode(RSA_DER_B64.trim()).unwrap();
        TestKey {
            kid: kid.into(),
            pair: Pair::Rs256(sig::RsaKeyPair::from_der(&der).unwrap()),
        }
    }

    /// A new Ed25519 key.
    pub fn ed25519(kid: &str) -> TestKey {
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        TestKey {
            kid: kid.into(),
            pair: Pair::Ed25519(sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()),
        }
    }

    pub fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Es256(_) => "ES256",
            Pair::Rs256(_) => "RS256",
            Pair::Ed25519(_) => "EdDSA",
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match &self.pair {
            Pair::Es256(p) => {
                let point = p.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
                       "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
            Pair::Rs256(p) => {
                let public = sig::RsaPublicKeyComponents::<Vec<u8>>::from(p.public());
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                       "n": b64(&public.n), "e": b64(&public.e)})
            }
            Pair::Ed25519(p) => json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "use": "sig",
                                      "alg": "EdDSA", "x": b64(p.public_key().as_ref())}),
        }
    }

    /// The public key's bytes as an issuer might carelessly publish them (what an HMAC-confusion attacker
    /// uses as the secret): the JWK's canonical JSON.
    pub fn public_bytes(&self) -> Vec<u8> {
        self.jwk().to_string().into_bytes()
    }

    /// A token with the usual header (`alg`, `kid`, `typ: JWT`).
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"}), claims)
    }

    /// A token with the given header, signed with this key.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let rng = SystemRandom::new();
        let signature = match &self.pair {
            Pair::Es256(p) => p.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Pair::Rs256(p) => {
                let mut s = vec![0; p.public().modulus_len()];
                p.sign(&sig::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut s)
                    .unwrap();
                s
            }
            Pair::Ed25519(p) => p.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// A JWKS document of these keys.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// `base64url(header).base64url(claims)`.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// A token with any signature bytes (empty for `alg: none`).
pub fn with_signature(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}",
        signing_input(header, claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// An HS256 token made with `secret` (the algorithm-confusion attack uses a public key as the secret).
pub fn hs256(secret: &[u8], claims: &Value, kid: &str) -> String {
    let input = signing_input(&json!({"alg": "HS256", "kid": kid, "typ": "JWT"}), claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}
