//! The header fields the guard acts on, recognised in one comparison: every request and response head has each of
//! its fields classified, so the name's length picks the one candidate it is compared with.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Host,
    Origin,
    ContentLength,
    TransferEncoding,
    Connection,
    Expect,
    XForwardedFor,
    XForwardedHost,
    XForwardedProto,
    /// Hop-by-hop (RFC 9110 §7.6.1) besides `Connection` and `Transfer-Encoding`: `Keep-Alive`, `TE`, ...
    OtherHopByHop,
    Other,
}

impl Field {
    /// `name` is a field name as httparse hands it over: a token (RFC 9110 §5.6.2).
    pub fn of(name: &str) -> Field {
        let is = |known: &str| token_is(name.as_bytes(), known.as_bytes());
        match name.len() {
            2 if is("te") => Field::OtherHopByHop,
            4 if is("host") => Field::Host,
            6 if is("origin") => Field::Origin,
            6 if is("expect") => Field::Expect,
            7 if is("trailer") || is("upgrade") => Field::OtherHopByHop,
            10 if is("connection") => Field::Connection,
            10 if is("keep-alive") => Field::OtherHopByHop,
            14 if is("content-length") => Field::ContentLength,
            15 if is("x-forwarded-for") => Field::XForwardedFor,
            16 if is("x-forwarded-host") => Field::XForwardedHost,
            16 if is("proxy-connection") => Field::OtherHopByHop,
            17 if is("transfer-encoding") => Field::TransferEncoding,
            17 if is("x-forwarded-proto") => Field::XForwardedProto,
            _ => Field::Other,
        }
    }

    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Field::Connection | Field::TransferEncoding | Field::OtherHopByHop
        )
    }
}

/// Whether a `Connection` value names fields besides `close` and `keep-alive` (those are hop-by-hop too).
pub fn lists_field_names(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive"))
}

/// Whether a token equals `known` (lowercase letters and `-`) in any case. Setting bit 5 lowercases a letter
/// and leaves `-` as it is; of the other token characters none becomes a lowercase letter or `-` that way. So the
/// comparison runs eight bytes at a time (the last word overlapping the one before).
fn token_is(token: &[u8], known: &[u8]) -> bool {
    const LOWER: u64 = 0x2020_2020_2020_2020;
    let len = token.len();
    if len != known.len() {
        return false;
    }
    if len < 8 {
        return token
            .iter()
            .zip(known)
            .fold(0, |diff, (t, k)| diff | ((t | 0x20) ^ k))
            == 0;
    }
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let mut diff = 0;
    for at in (0..len - 8).step_by(8).chain([len - 8]) {
        diff |= (word(token, at) | LOWER) ^ word(known, at);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_are_the_listed_ones_in_any_case() {
        let hop_by_hop = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ];
        for name in hop_by_hop {
            assert!(Field::of(name).is_hop_by_hop(), "{name}");
            assert!(Field::of(&name.to_ascii_uppercase()).is_hop_by_hop(), "{name}");
        }
        for name in [
            "host",
            "content-length",
            "x-forwarded-for",
            "mcp-session-id",
            "tea",
            "t",
        ] {
            assert!(!Field::of(name).is_hop_by_hop(), "{name}");
        }
    }

    #[test]
    fn no_other_token_character_passes_for_a_letter_or_a_dash() {
        let token_chars = (0u8..=127).filter(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(c));
        for c in token_chars {
            for k in (b'a'..=b'z').chain([b'-']) {
                assert_eq!(
                    token_is(&[c], &[k]),
                    c.eq_ignore_ascii_case(&k),
                    "{:?} vs {:?}",
                    c as char,
                    k as char
                );
            }
        }
    }

    #[test]
    fn every_byte_of_a_long_name_counts() {
        let known = "x-forwarded-proto";
        assert!(token_is(b"X-Forwarded-Proto", known.as_bytes()));
        for i in 0..known.len() {
            let mut changed = known.as_bytes().to_vec();
            changed[i] = if changed[i] == b'x' { b'y' } else { b'x' };
            assert!(
                !token_is(&changed, known.as_bytes()),
                "{}",
                String::from_utf8_lossy(&changed)
            );
        }
    }

    #[test]
    fn known_fields_are_recognised_in_any_case() {
        let cases = [
            ("Host", Field::Host),
            ("ORIGIN", Field::Origin),
            ("content-length", Field::ContentLength),
            ("Transfer-Encoding", Field::TransferEncoding),
            ("connection", Field::Connection),
            ("Expect", Field::Expect),
            ("X-Forwarded-For", Field::XForwardedFor),
            ("x-forwarded-host", Field::XForwardedHost),
            ("X-FORWARDED-PROTO", Field::XForwardedProto),
            ("Hostx", Field::Other),
            ("x-forwarded-fox", Field::Other),
            ("", Field::Other),
        ];
        for (name, want) in cases {
            assert_eq!(Field::of(name), want, "{name}");
        }
    }
}
