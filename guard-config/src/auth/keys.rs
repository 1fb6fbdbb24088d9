//! An issuer's public keys, from its JWKS document (RFC 7517), ready to check signatures with.
//!
//! Only asymmetric keys are ever read: a resource server verifies signatures, it holds no shared secret, so an
//! `oct` (HMAC) key in a JWKS is skipped and there is nothing an `HS256` token could be checked against — the
//! algorithm-confusion attack (an HMAC made with the public key as its secret) has no key to use.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::token::Algorithm;

/// The most keys one JWKS may hold: a key set is searched per token, and a feed of thousands is an attack.
pub const MAX_KEYS: usize = 64;
/// The largest JWKS document read (the guard's fetcher stops reading there too).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why a JWKS document cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS is not a JSON object with a `keys` array: {0}")]
    Json(String),
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the JWKS has more than {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("the JWKS has no signature key this guard can use (RSA, EC P-256/P-384 or Ed25519)")]
    NoUsableKey,
}

/// One public key: its id, the algorithms it may check, and the key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: Option<String>,
    /// The `alg` the JWK names, if it names one: then only that algorithm may use it.
    pub alg: Option<Algorithm>,
    material: Material,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point `04 || x || y`.
    EcP256(Vec<u8>),
    EcP384(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// Whether this key may check a signature of `alg`: the key type fits, and the JWK's own `alg` (if any)
    /// is that algorithm.
    pub fn fits(&self, alg: Algorithm) -> bool {
        let kind = matches!(
            (&self.material, alg),
            (
                Material::Rsa { .. },
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (Material::EcP256(_), Algorithm::ES256)
                | (Material::EcP384(_), Algorithm::ES384)
                | (Material::Ed25519(_), Algorithm::EdDSA)
        );
        kind && self.alg.is_none_or(|a| a == alg)
    }

    /// Checks `signature` over `message` with this key under `alg` (which must [`fit`](Self::fits)).
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature as sig;
        if !self.fits(alg) {
            return false;
        }
        match &self.material {
            Material::Rsa { n, e } => {
                let params: &sig::RsaParameters = match alg {
                    Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                sig::RsaPublicKeyComponents { n, e }
                    .verify(params, message, signature)
                    .is_ok()
            }
            Material::EcP256(point) => sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            Material::EcP384(point) => sig::UnparsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            Material::Ed25519(x) => sig::UnparsedPublicKey::new(&sig::ED25519, x)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

/// An issuer's usable public keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<PublicKey>,
    /// Keys in the document that were skipped, and why (shown by readiness and `explain`).
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

impl KeySet {
    /// Reads a JWKS document. Keys this guard cannot use (encryption keys, HMAC secrets, unknown curves,
    /// RSA moduli under 2048 bits, keys whose `alg` is not a signature algorithm it knows) are skipped and
    /// listed in [`KeySet::skipped`]; a document with no usable key at all is an error.
    pub fn from_jwks_json(bytes: &[u8]) -> Result<KeySet, JwksError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        let doc: JwksDoc = serde_json::from_slice(bytes).map_err(|e| JwksError::Json(e.to_string()))?;
        if doc.keys.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys);
        }
        let mut set = KeySet::default();
        for (i, value) in doc.keys.into_iter().enumerate() {
            match serde_json::from_value::<Jwk>(value)
                .map_err(|e| format!("not a JWK: {e}"))
                .and_then(|jwk| jwk.public_key())
            {
                Ok(key) => set.keys.push(key),
                Err(why) => set.skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(set)
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may check a token signed with `alg` and naming `kid`: with a `kid`, only keys of that id;
    /// without one, every key that fits the algorithm.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a PublicKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid))
    }
}

impl Jwk {
    fn public_key(self) -> Result<PublicKey, String> {
        if let Some(u) = &self.use_
            && u != "sig"
        {
            return Err(format!("use {u:?} is not \"sig\""));
        }
        if let Some(ops) = &self.key_ops
            && !ops.iter().any(|o| o == "verify")
        {
            return Err("key_ops does not include \"verify\"".into());
        }
        let alg = match &self.alg {
            None => None,
            Some(a) => Some(Algorithm::parse(a).map_err(|e| format!("alg {a:?}: {e}"))?),
        };
        let field = |name: &str, v: &Option<String>| -> Result<Vec<u8>, String> {
            let v = v.as_deref().ok_or_else(|| format!("no {name:?}"))?;
            URL_SAFE_NO_PAD
                .decode(v)
                .map_err(|_| format!("{name:?} is not base64url"))
        };
        let material = match self.kty.as_str() {
            "RSA" => {
                let n = strip_leading_zeros(field("n", &self.n)?);
                let e = strip_leading_zeros(field("e", &self.e)?);
                if n.len() < 256 {
                    return Err(format!(
                        "an RSA modulus of {} bits is too short (2048 at least)",
                        n.len() * 8
                    ));
                }
                Material::Rsa { n, e }
            }
            "EC" => {
                let (x, y) = (field("x", &self.x)?, field("y", &self.y)?);
                let (len, p384) = match self.crv.as_deref() {
                    Some("P-256") => (32, false),
                    Some("P-384") => (48, true),
                    other => return Err(format!("curve {other:?} is not P-256 or P-384")),
                };
                if x.len() != len || y.len() != len {
                    return Err("x or y has the wrong length for the curve".into());
                }
                let point = [&[4u8][..], &x, &y].concat();
                match p384 {
                    false => Material::EcP256(point),
                    true => Material::EcP384(point),
                }
            }
            "OKP" => {
                if self.crv.as_deref() != Some("Ed25519") {
                    return Err(format!("curve {:?} is not Ed25519", self.crv));
                }
                let x = field("x", &self.x)?;
                if x.len() != 32 {
                    return Err("x has the wrong length for Ed25519".into());
                }
                Material::Ed25519(x)
            }
            "oct" => return Err("a symmetric (HMAC) key: never used to check a token".into()),
            other => return Err(format!("key type {other:?} is not RSA, EC or OKP")),
        };
        let key = PublicKey {
            kid: self.kid,
            alg,
            material,
        };
        if let Some(a) = alg
            && !key.fits(a)
        {
            return Err(format!("alg {a} does not fit key type {}", self.kty));
        }
        Ok(key)
    }
}

fn strip_leading_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|&&b| b == 0).count();
    v.drain(..zeros.min(v.len().saturating_sub(1)));
    v
}
