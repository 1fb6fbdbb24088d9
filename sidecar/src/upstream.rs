//! The upstream MCP server: where requests go, and what Host/Origin it expects.

use http::HeaderValue;
use http::uri::{Authority, Uri};

/// Why `--upstream` is not usable.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("invalid --upstream {0:?}: {1}")]
    Invalid(String, String),
}

/// The parsed `--upstream`.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub authority: Authority,
    /// Talk HTTP/2 with prior knowledge (h2c).
    pub h2: bool,
    /// What the upstream sees as `Host` by default: its own authority.
    pub host_header: HeaderValue,
    /// What the upstream sees as `Origin` (once the guard validated the client's): `http://<authority>`.
    pub origin_header: HeaderValue,
}

impl Upstream {
    /// Parses `http://host:port` or `h2c://host:port` (a trailing `/` is fine; no other path, no TLS).
    pub fn parse(s: &str, force_h2c: bool) -> Result<Self, UpstreamError> {
        let invalid = |why: &str| UpstreamError::Invalid(s.to_owned(), why.to_owned());
        let uri: Uri = s
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        let h2 = match uri.scheme_str() {
            Some("http") => force_h2c,
            Some("h2c") => true,
            Some("https") => {
                return Err(invalid(
                    "TLS to the upstream is not supported; the upstream is a local server: use http://",
                ));
            }
            _ => return Err(invalid("expected http://host:port or h2c://host:port")),
        };
        let authority = uri.authority().cloned().ok_or_else(|| invalid("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("userinfo is not supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("a path prefix is not supported; give scheme://host:port"));
        }
        let host_header = HeaderValue::from_str(authority.as_str()).map_err(|e| invalid(&e.to_string()))?;
        let origin_header = HeaderValue::try_from(format!("http://{}", authority.as_str()))
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Upstream {
            authority,
            h2,
            host_header,
            origin_header,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstreams() {
        let u = Upstream::parse("http://127.0.0.1:8000", false).unwrap();
        assert!(!u.h2);
        assert_eq!(u.host_header, "127.0.0.1:8000");
        assert_eq!(u.origin_header, "http://127.0.0.1:8000");
        assert!(Upstream::parse("h2c://127.0.0.1:8000/", false).unwrap().h2);
        assert!(Upstream::parse("http://[::1]:8000", true).unwrap().h2);
        assert_eq!(
            Upstream::parse("http://localhost", false).unwrap().host_header,
            "localhost"
        );
        for bad in [
            "https://a:1",
            "127.0.0.1:8000",
            "http://a:1/mcp",
            "ftp://a",
            "http://u@a:1",
            "",
        ] {
            assert!(Upstream::parse(bad, false).is_err(), "{bad}");
        }
    }
}
