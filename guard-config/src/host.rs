//! Host names, received authorities (`Host` / `:authority`) and the [`HostPattern`]s they are matched against.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::PatternError;

#[cfg(test)]
pub(crate) mod tests;

/// The longest host name accepted (RFC 1035: 253 characters without the trailing dot).
const MAX_NAME_LEN: usize = 253;

/// A received host: a DNS name (borrowed, original case, trailing dot removed) or an IP literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    /// A DNS name, validated (letters, digits, `-`, `_`; non-empty labels), one trailing dot removed.
    Name(&'a str),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

impl Host<'_> {
    /// Parses a host without a port: a name, an IPv4 literal or a bracketed IPv6 literal.
    pub fn parse(s: &str) -> Result<Host<'_>, AuthorityError> {
        if s.is_empty() {
            return Err(AuthorityError::Empty);
        }
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(AuthorityError::InvalidIpv6)?;
            return inner
                .parse::<Ipv6Addr>()
                .map(Host::Ipv6)
                .map_err(|_| AuthorityError::InvalidIpv6);
        }
        if let Ok(v4) = s.parse::<Ipv4Addr>() {
            return Ok(Host::Ipv4(v4));
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        validate_name(name)?;
        Ok(Host::Name(name))
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Checks the characters and labels of a DNS name (without its trailing dot).
fn validate_name(name: &str) -> Result<(), AuthorityError> {
    if name.is_empty() {
        return Err(AuthorityError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(AuthorityError::TooLong);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(AuthorityError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(AuthorityError::TooLong);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(invalid_char(c));
        }
    }
    Ok(())
}

fn invalid_char(c: char) -> AuthorityError {
    match c {
        '@' => AuthorityError::Userinfo,
        '/' | '?' | '#' => AuthorityError::PathOrQuery,
        c if c.is_whitespace() || c.is_control() => AuthorityError::Whitespace,
        c => AuthorityError::InvalidChar(c),
    }
}

/// Why a received `Host` / `:authority` / origin authority is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("the host is empty")]
    Empty,
    #[error("the value is not valid UTF-8 text")]
    NotText,
    #[error("userinfo (`user@`) is not allowed in a host")]
    Userinfo,
    #[error("whitespace or control characters are not allowed in a host")]
    Whitespace,
    #[error("a host has no path, query or fragment")]
    PathOrQuery,
    #[error("invalid character {0:?} in host")]
    InvalidChar(char),
    #[error("a host name has an empty label (`..`, or a leading dot)")]
    EmptyLabel,
    #[error("the host name is too long")]
    TooLong,
    #[error("invalid IPv6 literal (IPv6 addresses are written in brackets: `[::1]:8080`)")]
    InvalidIpv6,
    #[error("invalid port (a port is 1 to 65535, digits only)")]
    InvalidPort,
}

/// A received authority, `host[:port]`, parsed and validated. Borrowed from the request; no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authority<'a> {
    pub host: Host<'a>,
    pub port: Option<u16>,
}

impl<'a> Authority<'a> {
    /// Parses the value of a `Host` header, an HTTP/2 `:authority` or a URI's authority.
    ///
    /// Rejects what must never match: userinfo (`a@b`), ports that are not 1..=65535 made of digits
    /// (`h:80.evil.com`, `h:99999`, `h:`), whitespace, empty values, paths, and characters a host cannot have.
    pub fn parse(s: &'a str) -> Result<Self, AuthorityError> {
        match Self::parse_plain_name(s.as_bytes()) {
            Some(authority) => Ok(authority),
            None => Self::parse_thoroughly(s),
        }
    }

    /// Parses raw header bytes (header values are not always UTF-8).
    pub fn parse_bytes(b: &'a [u8]) -> Result<Self, AuthorityError> {
        match Self::parse_plain_name(b) {
            Some(authority) => Ok(authority),
            None => Self::parse_thoroughly(std::str::from_utf8(b).map_err(|_| AuthorityError::NotText)?),
        }
    }

    /// The shape nearly every request sends, an ASCII DNS name with an optional port, in one pass over the bytes
    /// (this runs for every request). `None` for anything else: IP literals, odd but valid values and every error
    /// go to [`Authority::parse_thoroughly`], which also explains what is wrong. It only accepts what that parser
    /// accepts, with the same result (a test holds the two together).
    pub(crate) fn parse_plain_name(b: &'a [u8]) -> Option<Self> {
        let mut label = 0;
        let mut only_digits_and_dots = true;
        let mut end = b.len();
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'_' => {
                    only_digits_and_dots = false;
                    label += 1;
                }
                b'0'..=b'9' => label += 1,
                b'.' if label > 0 => label = 0,
                b':' => {
                    end = i;
                    break;
                }
                _ => return None,
            }
            if label > 63 {
                return None;
            }
        }
        let name = b[..end].strip_suffix(b".").unwrap_or(&b[..end]);
        // All digits and dots may be an IPv4 literal: the thorough path decides.
        if name.is_empty() || name.len() > MAX_NAME_LEN || only_digits_and_dots {
            return None;
        }
        let port = match b.get(end + 1..) {
            None => None,
            Some(digits) => Some(parse_port_bytes(digits)?),
        };
        Some(Authority {
            host: Host::Name(std::str::from_utf8(name).ok()?),
            port,
        })
    }

    /// Parses any value, and explains why a bad one is bad.
    fn parse_thoroughly(s: &'a str) -> Result<Self, AuthorityError> {
        if s.is_empty() {
            return Err(AuthorityError::Empty);
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid_char(c));
        }
        if s.contains('@') {
            return Err(AuthorityError::Userinfo);
        }
        if s.contains(['/', '?', '#']) {
            return Err(AuthorityError::PathOrQuery);
        }
        let (host, port) = split_port(s)?;
        let port = port.map(parse_port).transpose()?;
        Ok(Authority {
            host: Host::parse(host)?,
            port,
        })
    }
}

impl fmt::Display for Authority<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

/// Splits `host[:port]` (host possibly a bracketed IPv6 literal) into host and port text.
fn split_port(s: &str) -> Result<(&str, Option<&str>), AuthorityError> {
    if s.starts_with('[') {
        let end = s.find(']').ok_or(AuthorityError::InvalidIpv6)?;
        let (host, rest) = s.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(p) => Ok((host, Some(p))),
                None => Err(AuthorityError::InvalidIpv6),
            },
        };
    }
    match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Err(AuthorityError::InvalidIpv6),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((s, None)),
    }
}

/// Parses a port: 1 to 5 ASCII digits, 1..=65535.
fn parse_port(p: &str) -> Result<u16, AuthorityError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthorityError::InvalidPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(AuthorityError::InvalidPort),
        Ok(n) => Ok(n),
    }
}

/// A port of 1 to 5 ASCII digits, 1..=65535, or `None`.
fn parse_port_bytes(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 {
        return None;
    }
    let mut n: u32 = 0;
    for &c in p {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    u16::try_from(n).ok().filter(|&n| n != 0)
}

/// Which ports a pattern allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortMatch {
    /// No port in the pattern, or `:*`.
    Any,
    Exact(u16),
}

impl PortMatch {
    /// Whether `port` (the received port, or the scheme's default when none was sent) is allowed.
    pub fn matches(self, port: Option<u16>) -> bool {
        match self {
            PortMatch::Any => true,
            PortMatch::Exact(p) => port == Some(p),
        }
    }
}

#[derive(Clone, Copy)]
enum Wild {
    None,
    One,
    Many,
}

/// The host part of a pattern. Names are stored lowercase without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Exactly this name.
    Exact(String),
    /// `*.suffix`: exactly one label followed by `.suffix`.
    OneLabel(String),
    /// `**.suffix`: one or more labels followed by `.suffix`.
    AnyLabels(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

impl HostMatch {
    /// Parses the host part of a pattern (no port).
    pub(crate) fn parse_pattern(s: &str) -> Result<Self, PatternError> {
        if s == "*" || s == "**" {
            return Err(PatternError::BareWildcard);
        }
        let (wild, rest) = if let Some(rest) = s.strip_prefix("**.") {
            (Wild::Many, rest)
        } else if let Some(rest) = s.strip_prefix("*.") {
            (Wild::One, rest)
        } else {
            (Wild::None, s)
        };
        if rest.contains('*') {
            return Err(PatternError::MisplacedWildcard);
        }
        // `[10.0.0.1]`: an IPv4 address in brackets, so that one spelling (`[$(POD_IP)]`) serves either family.
        if let (Wild::None, Some(v4)) = (
            wild,
            rest.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|a| a.parse::<Ipv4Addr>().ok()),
        ) {
            return Ok(HostMatch::Ipv4(v4));
        }
        match (wild, Host::parse(rest).map_err(PatternError::Host)?) {
            (Wild::None, Host::Name(n)) => Ok(HostMatch::Exact(n.to_ascii_lowercase())),
            (Wild::One, Host::Name(n)) => Ok(HostMatch::OneLabel(n.to_ascii_lowercase())),
            (Wild::Many, Host::Name(n)) => Ok(HostMatch::AnyLabels(n.to_ascii_lowercase())),
            (Wild::None, Host::Ipv4(a)) => Ok(HostMatch::Ipv4(a)),
            (Wild::None, Host::Ipv6(a)) => Ok(HostMatch::Ipv6(a)),
            _ => Err(PatternError::WildcardIp),
        }
    }

    /// Whether a received host matches.
    pub fn matches(&self, host: &Host<'_>) -> bool {
        match (self, host) {
            (HostMatch::Exact(e), Host::Name(n)) => n.eq_ignore_ascii_case(e),
            (HostMatch::OneLabel(suffix), Host::Name(n)) => {
                prefix_before_suffix(n, suffix).is_some_and(|prefix| !prefix.contains('.'))
            }
            (HostMatch::AnyLabels(suffix), Host::Name(n)) => prefix_before_suffix(n, suffix).is_some(),
            (HostMatch::Ipv4(a), Host::Ipv4(b)) => a == b,
            (HostMatch::Ipv6(a), Host::Ipv6(b)) => a == b,
            _ => false,
        }
    }
}

/// If `name` is `<prefix>.<suffix>` (suffix compared case-insensitively) with a non-empty prefix, the prefix.
fn prefix_before_suffix<'n>(name: &'n str, suffix: &str) -> Option<&'n str> {
    let cut = name.len().checked_sub(suffix.len() + 1)?;
    if cut == 0 || !name.is_char_boundary(cut) {
        return None;
    }
    let (prefix, dotted) = name.split_at(cut);
    let tail = dotted.strip_prefix('.')?;
    tail.eq_ignore_ascii_case(suffix).then_some(prefix)
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(n) => f.write_str(n),
            HostMatch::OneLabel(s) => write!(f, "*.{s}"),
            HostMatch::AnyLabels(s) => write!(f, "**.{s}"),
            HostMatch::Ipv4(a) => write!(f, "{a}"),
            HostMatch::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// An allowed-host entry: `example.com`, `example.com:*`, `example.com:8080`, `*.example.com`,
/// `**.example.com`, `10.0.0.1`, `[::1]:8080`. See the crate docs for the rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPattern {
    pub host: HostMatch,
    pub port: PortMatch,
}

impl HostPattern {
    /// Parses an allowed-host entry, explaining what is wrong with a bad one.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let (host, port) = split_pattern(s)?;
        Ok(HostPattern {
            host: HostMatch::parse_pattern(host)?,
            port,
        })
    }

    /// Whether a received authority matches. `default_port` is the port implied when the authority has none
    /// (80 for plain HTTP); it only matters for patterns with an explicit port.
    pub fn matches(&self, authority: &Authority<'_>, default_port: Option<u16>) -> bool {
        self.host.matches(&authority.host) && self.port.matches(authority.port.or(default_port))
    }
}

/// Common checks and the port split shared by host and origin patterns (input: `host[:port|:*]`).
pub(crate) fn split_pattern(s: &str) -> Result<(&str, PortMatch), PatternError> {
    if s.is_empty() {
        return Err(PatternError::Empty);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PatternError::Whitespace);
    }
    if s == "*" || s == "**" || s == "*:*" {
        return Err(PatternError::BareWildcard);
    }
    if s.contains("://") {
        return Err(PatternError::HasScheme);
    }
    if s.contains('@') {
        return Err(PatternError::Host(AuthorityError::Userinfo));
    }
    if s.contains(['/', '?', '#']) {
        return Err(PatternError::Host(AuthorityError::PathOrQuery));
    }
    let (host, port) = split_port(s).map_err(PatternError::Host)?;
    let port = match port {
        None => PortMatch::Any,
        Some("*") => PortMatch::Any,
        Some(p) => PortMatch::Exact(parse_port(p).map_err(PatternError::Host)?),
    };
    Ok((host, port))
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            PortMatch::Any => write!(f, "{}", self.host),
            PortMatch::Exact(p) => write!(f, "{}:{p}", self.host),
        }
    }
}

impl std::str::FromStr for HostPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
