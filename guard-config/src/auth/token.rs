//! A JWT access token taken apart (RFC 7519, JWS compact serialization): the header, the claims, and the bytes
//! the signature covers. Nothing here trusts the token; [`super::AuthPolicy::authenticate`] checks it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// The longest token read, in bytes. Real access tokens are a few hundred bytes to a few KiB; past this one is
/// refused before anything is decoded.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The signature algorithms a token may use: asymmetric only (see [`super::keys`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// Parses an `alg` name, saying why the ones never accepted are refused.
    pub fn parse(s: &str) -> Result<Algorithm, &'static str> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(match s {
                _ if s.eq_ignore_ascii_case("none") => "an unsigned token (alg none) is never accepted",
                _ if s.starts_with("HS") => {
                    "HMAC (a shared secret) is never accepted: the guard checks issuers' public keys only"
                }
                _ => "not a signature algorithm the guard knows (RS256/384/512, PS256/384/512, ES256/384, EdDSA)",
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token cannot even be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("a JWT has three base64url parts separated by dots (header.claims.signature)")]
    NotThreeParts,
    #[error("the {0} is not unpadded base64url")]
    NotBase64(&'static str),
    #[error("the {0} is not a JSON object: {1}")]
    NotJson(&'static str, String),
    #[error("the header has no alg")]
    NoAlgorithm,
    #[error("alg {0:?}: {1}")]
    Algorithm(String, &'static str),
    #[error("the header names critical extensions ({0}) that the guard does not implement")]
    Critical(String),
    #[error("typ {0:?} is not an access token type (at+jwt, JWT)")]
    Type(String),
    #[error("the signature is empty")]
    NoSignature,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// A token taken apart, unverified.
#[derive(Clone, Debug)]
pub struct Jwt<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// `header.claims` as sent: what the signature covers.
    pub signing_input: &'a [u8],
    pub signature: Vec<u8>,
}

impl<'a> Jwt<'a> {
    /// Takes a compact JWS apart. Strict: exactly three parts, unpadded base64url (RFC 7515 §2), JSON objects,
    /// an algorithm the guard knows, no critical extensions.
    pub fn decode(token: &'a str) -> Result<Jwt<'a>, TokenFormatError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenFormatError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenFormatError::NotThreeParts);
        };
        let b64 = |part: &str, what| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenFormatError::NotBase64(what))
        };
        let header: Header = serde_json::from_slice(&b64(h, "header")?)
            .map_err(|e| TokenFormatError::NotJson("header", e.to_string()))?;
        let alg = header.alg.ok_or(TokenFormatError::NoAlgorithm)?;
        let alg = Algorithm::parse(&alg).map_err(|why| TokenFormatError::Algorithm(alg.clone(), why))?;
        if let Some(crit) = header.crit {
            return Err(TokenFormatError::Critical(crit.to_string()));
        }
        if let Some(typ) = header.typ {
            // RFC 9068 access tokens say `at+jwt`; many issuers (Hydra, Keycloak) say `JWT`; Kubernetes says
            // nothing. An ID token or a logout token names another type and is not an access token.
            let t = typ.to_ascii_lowercase();
            if !matches!(t.as_str(), "at+jwt" | "application/at+jwt" | "jwt") {
                return Err(TokenFormatError::Type(typ));
            }
        }
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&b64(c, "claims")?)
                .map_err(|e| TokenFormatError::NotJson("claims", e.to_string()))?;
        let signature = b64(s, "signature")?;
        if signature.is_empty() {
            return Err(TokenFormatError::NoSignature);
        }
        Ok(Jwt {
            alg,
            kid: header.kid,
            claims,
            signing_input: &token.as_bytes()[..h.len() + 1 + c.len()],
            signature,
        })
    }

    /// A string claim.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(|v| v.as_str())
    }

    /// A NumericDate claim, in whole seconds (RFC 7519 allows fractions; they are cut).
    pub fn time(&self, name: &str) -> Result<Option<u64>, String> {
        match self.claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .map(|t| Some(t as u64))
                .ok_or_else(|| format!("{name} is not a NumericDate")),
        }
    }

    /// `aud`: one string or an array of strings.
    pub fn audiences(&self) -> Result<Vec<&str>, String> {
        match self.claims.get("aud") {
            None => Ok(Vec::new()),
            Some(serde_json::Value::String(s)) => Ok(vec![s.as_str()]),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| "aud holds something that is not a string".to_owned())
                })
                .collect(),
            Some(_) => Err("aud is neither a string nor an array of strings".into()),
        }
    }

    /// The granted scopes: `scope` (space-separated, RFC 8693 / RFC 9068) or `scp` (an array, as Hydra and
    /// Entra ID write it; or a string).
    pub fn scopes(&self) -> Vec<String> {
        let split = |s: &str| s.split_ascii_whitespace().map(str::to_owned).collect::<Vec<_>>();
        match (self.claims.get("scope"), self.claims.get("scp")) {
            (Some(serde_json::Value::String(s)), _) => split(s),
            (_, Some(serde_json::Value::Array(a))) => {
                a.iter().filter_map(|v| v.as_str()).map(str::to_owned).collect()
            }
            (_, Some(serde_json::Value::String(s))) => split(s),
            _ => Vec::new(),
        }
    }
}
