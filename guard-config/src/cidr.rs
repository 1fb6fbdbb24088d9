//! Address ranges (`10.0.0.0/8`, `fd00::/8`, a bare address for one host), for the trusted proxies.

use std::fmt;
use std::net::IpAddr;

/// Why a CIDR entry is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("not an IP address")]
    Address,
    #[error("the prefix length must be a number from 0 to {max}")]
    PrefixLength { max: u8 },
    #[error("bits are set past the prefix length (did you mean {0}?)")]
    HostBits(String),
}

/// An IPv4 or IPv6 network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// The network bits of a `width`-bit address with a `prefix`-bit prefix.
fn mask(prefix: u8, width: u8) -> u128 {
    let all = if width == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    match prefix {
        0 => 0,
        p => all & !((1u128 << (width - p)) - 1),
    }
}

impl Cidr {
    /// Parses `addr/len` or a bare address (one host). Bits past the prefix are an error, so that `10.1.2.3/8`
    /// (which reads as one host to some and as `10.0.0.0/8` to others) is written as meant.
    pub fn parse(s: &str) -> Result<Self, CidrError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| CidrError::Address)?;
        let (value, width) = bits(network);
        let prefix = match len {
            None => width,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width && !l.starts_with('+'))
                .ok_or(CidrError::PrefixLength { max: width })?,
        };
        if value & !mask(prefix, width) != 0 {
            let net = Cidr::masked(network, prefix);
            return Err(CidrError::HostBits(net.to_string()));
        }
        Ok(Cidr { network, prefix })
    }

    fn masked(ip: IpAddr, prefix: u8) -> Cidr {
        let (value, width) = bits(ip);
        let v = value & mask(prefix, width);
        let network = match ip {
            IpAddr::V4(_) => IpAddr::V4((v as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(v.into()),
        };
        Cidr { network, prefix }
    }

    /// Whether an address is in the network. An IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`, as a dual-stack socket
    /// reports IPv4 clients) is taken as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let ((net, width), (addr, addr_width)) = (bits(self.network), bits(ip));
        width == addr_width && (addr & mask(self.prefix, width)) == net
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_single_hosts() {
        for (given, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00::/8", "fd00::/8"),
            ("::1", "::1/128"),
        ] {
            assert_eq!(Cidr::parse(given).unwrap().to_string(), shown, "{given}");
        }
        for (bad, want) in [
            ("10.0.0.0/33", CidrError::PrefixLength { max: 32 }),
            ("10.0.0.0/+8", CidrError::PrefixLength { max: 32 }),
            ("10.0.0.0/", CidrError::PrefixLength { max: 32 }),
            ("fd00::/129", CidrError::PrefixLength { max: 128 }),
            ("10.1.2.3/8", CidrError::HostBits("10.0.0.0/8".into())),
            ("fd00::1/8", CidrError::HostBits("fd00::/8".into())),
            ("proxy.local", CidrError::Address),
            ("", CidrError::Address),
        ] {
            assert_eq!(Cidr::parse(bad), Err(want), "{bad}");
        }
    }

    #[test]
    fn contains_by_prefix_and_family() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.0/8", "::ffff:10.0.0.1", true),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::/0", "10.0.0.1", false),
        ];
        for (net, addr, want) in cases {
            assert_eq!(
                Cidr::parse(net).unwrap().contains(ip(addr)),
                want,
                "{net} ∋ {addr}"
            );
        }
    }
}
