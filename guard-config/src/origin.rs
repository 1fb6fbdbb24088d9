//! Received `Origin` values and the [`OriginPattern`]s they are matched against.

use std::fmt;

use crate::PatternError;
use crate::host::{Authority, AuthorityError, HostMatch, PortMatch, split_pattern};

#[cfg(test)]
mod tests;

/// The default port of a scheme, for the schemes that have one.
pub fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else {
        None
    }
}

/// Why a received `Origin` is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("the origin is empty")]
    Empty,
    #[error("the value is not valid UTF-8 text")]
    NotText,
    #[error("an origin is `scheme://host[:port]` or `null`")]
    NotAnOrigin,
    #[error("invalid scheme (letters, digits, `+`, `-`, `.`, starting with a letter)")]
    InvalidScheme,
    #[error("an origin has no path, query or fragment (not even a trailing `/`)")]
    HasPath,
    #[error("invalid host in origin: {0}")]
    Authority(#[source] AuthorityError),
}

/// A received `Origin` header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    /// The opaque origin `null` (sandboxed frames, `file:` pages, some redirects).
    Null,
    Tuple {
        scheme: &'a str,
        authority: Authority<'a>,
    },
}

impl<'a> Origin<'a> {
    /// Parses an `Origin` header value: `null` or `scheme://host[:port]` exactly (RFC 6454 serialisation).
    pub fn parse(s: &'a str) -> Result<Self, OriginError> {
        match Self::parse_plain(s.as_bytes()) {
            Some(origin) => Ok(origin),
            None => Self::parse_thoroughly(s),
        }
    }

    /// Parses raw header bytes.
    pub fn parse_bytes(b: &'a [u8]) -> Result<Self, OriginError> {
        match Self::parse_plain(b) {
            Some(origin) => Ok(origin),
            None => Self::parse_thoroughly(std::str::from_utf8(b).map_err(|_| OriginError::NotText)?),
        }
    }

    /// The common shape, `scheme://name[:port]` in ASCII, in one pass (as [`Authority::parse_plain_name`]);
    /// `None` sends everything else to [`Origin::parse_thoroughly`].
    fn parse_plain(b: &'a [u8]) -> Option<Self> {
        let colon = b.iter().position(|&c| c == b':')?;
        let (scheme, rest) = (&b[..colon], b[colon..].strip_prefix(b"://")?);
        let (first, others) = scheme.split_first()?;
        if !first.is_ascii_alphabetic()
            || !others
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        {
            return None;
        }
        Some(Origin::Tuple {
            scheme: std::str::from_utf8(scheme).ok()?,
            authority: Authority::parse_plain_name(rest)?,
        })
    }

    /// Parses any value, and explains why a bad one is bad.
    fn parse_thoroughly(s: &'a str) -> Result<Self, OriginError> {
        if s.is_empty() {
            return Err(OriginError::Empty);
        }
        if s == "null" {
            return Ok(Origin::Null);
        }
        let (scheme, rest) = s.split_once("://").ok_or(OriginError::NotAnOrigin)?;
        validate_scheme(scheme)?;
        if rest.contains(['/', '?', '#']) {
            return Err(OriginError::HasPath);
        }
        let authority = Authority::parse(rest).map_err(OriginError::Authority)?;
        Ok(Origin::Tuple { scheme, authority })
    }

    /// The explicit port, or the scheme's default port.
    pub fn effective_port(&self) -> Option<u16> {
        match self {
            Origin::Null => None,
            Origin::Tuple { scheme, authority } => authority.port.or_else(|| default_port(scheme)),
        }
    }
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Null => f.write_str("null"),
            Origin::Tuple { scheme, authority } => write!(f, "{scheme}://{authority}"),
        }
    }
}

fn validate_scheme(scheme: &str) -> Result<(), OriginError> {
    let mut chars = scheme.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return Err(OriginError::InvalidScheme),
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) {
        Ok(())
    } else {
        Err(OriginError::InvalidScheme)
    }
}

/// Schemes whose origins are web pages: a wildcard over all of them is every site on the web.
const WEB_SCHEMES: [&str; 4] = ["http", "https", "ws", "wss"];

/// An allowed-origin entry: `https://mcp.example.com`, `http://localhost:3000`, `https://*.example.com`,
/// `http://localhost:*`, `chrome-extension://*`, or the literal `null`. Without a port the scheme's default port
/// is meant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OriginPattern {
    /// Allows the `null` origin.
    Null,
    /// `chrome-extension://*`: every origin of one non-web scheme (every installed extension or webview), opted
    /// into explicitly. Web schemes are refused: their wildcard is every page on the web.
    AnyOfScheme(String),
    Tuple {
        /// Lowercase scheme.
        scheme: String,
        host: HostMatch,
        /// The port; an absent port in the pattern is normalised to the scheme's default.
        port: PortMatch,
        /// For schemes without a default port and no port given: only origins without a port match.
        portless: bool,
    },
}

impl OriginPattern {
    /// Parses an allowed-origin entry, explaining what is wrong with a bad one.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PatternError::Whitespace);
        }
        if s == "null" {
            return Ok(OriginPattern::Null);
        }
        if s == "*" {
            return Err(PatternError::BareWildcard);
        }
        let (scheme, rest) = s.split_once("://").ok_or(PatternError::NoScheme)?;
        validate_scheme(scheme).map_err(|_| PatternError::InvalidScheme(scheme.to_owned()))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest == "*" {
            let scheme = scheme.to_ascii_lowercase();
            if WEB_SCHEMES.contains(&scheme.as_str()) {
                return Err(PatternError::WebSchemeWildcard(scheme));
            }
            return Ok(OriginPattern::AnyOfScheme(scheme));
        }
        if rest.contains(['/', '?', '#']) {
            return Err(PatternError::OriginHasPath);
        }
        let (host, port) = split_pattern(rest)?;
        let host = HostMatch::parse_pattern(host)?;
        let scheme = scheme.to_ascii_lowercase();
        let explicit = rest.len() != host_len(rest);
        let (port, portless) = match (port, explicit, default_port(&scheme)) {
            (PortMatch::Exact(p), _, _) => (PortMatch::Exact(p), false),
            (PortMatch::Any, true, _) => (PortMatch::Any, false),
            (PortMatch::Any, false, Some(d)) => (PortMatch::Exact(d), false),
            (PortMatch::Any, false, None) => (PortMatch::Any, true),
        };
        Ok(OriginPattern::Tuple {
            scheme,
            host,
            port,
            portless,
        })
    }

    /// Whether a received origin matches (scheme and host case-insensitively, default ports normalised).
    pub fn matches(&self, origin: &Origin<'_>) -> bool {
        match (self, origin) {
            (OriginPattern::Null, Origin::Null) => true,
            (OriginPattern::AnyOfScheme(scheme), Origin::Tuple { scheme: s, .. }) => {
                s.eq_ignore_ascii_case(scheme)
            }
            (
                OriginPattern::Tuple {
                    scheme,
                    host,
                    port,
                    portless,
                },
                o @ Origin::Tuple { scheme: s, authority },
            ) => {
                s.eq_ignore_ascii_case(scheme)
                    && host.matches(&authority.host)
                    && if *portless {
                        authority.port.is_none()
                    } else {
                        port.matches(o.effective_port())
                    }
            }
            _ => false,
        }
    }
}

/// Length of the host part of `host[:port]` (to tell whether a port was written).
fn host_len(s: &str) -> usize {
    if s.starts_with('[') {
        s.find(']').map_or(s.len(), |i| i + 1)
    } else {
        s.rfind(':').unwrap_or(s.len())
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginPattern::Null => f.write_str("null"),
            OriginPattern::AnyOfScheme(scheme) => write!(f, "{scheme}://*"),
            OriginPattern::Tuple {
                scheme,
                host,
                port,
                portless,
            } => match port {
                _ if *portless => write!(f, "{scheme}://{host}"),
                PortMatch::Exact(p) if Some(*p) == default_port(scheme) => write!(f, "{scheme}://{host}"),
                PortMatch::Exact(p) => write!(f, "{scheme}://{host}:{p}"),
                PortMatch::Any => write!(f, "{scheme}://{host}:*"),
            },
        }
    }
}

impl std::str::FromStr for OriginPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
