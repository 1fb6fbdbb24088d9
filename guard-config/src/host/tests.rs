use super::*;

fn auth(s: &str) -> Authority<'_> {
    Authority::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

#[test]
fn authority_parses_valid_values() {
    let cases: &[(&str, &str, Option<u16>)] = &[
        ("example.com", "example.com", None),
        ("Example.COM", "Example.COM", None),
        ("example.com.", "example.com", None),
        ("example.com.:8080", "example.com", Some(8080)),
        ("example.com:1", "example.com", Some(1)),
        ("example.com:65535", "example.com", Some(65535)),
        ("localhost", "localhost", None),
        ("my_host-1.svc", "my_host-1.svc", None),
        ("127.0.0.1", "127.0.0.1", None),
        ("127.0.0.1:8000", "127.0.0.1", Some(8000)),
        ("[::1]", "[::1]", None),
        ("[::1]:8080", "[::1]", Some(8080)),
        ("[0:0:0:0:0:0:0:1]:80", "[::1]", Some(80)),
        ("[2001:DB8::1]", "[2001:db8::1]", None),
    ];
    for (input, host, port) in cases {
        let a = auth(input);
        assert_eq!(a.host.to_string(), *host, "{input}");
        assert_eq!(a.port, *port, "{input}");
    }
}

#[test]
fn authority_rejects_malformed_values() {
    let cases: &[(&str, AuthorityError)] = &[
        ("", AuthorityError::Empty),
        ("a@b", AuthorityError::Userinfo),
        ("user:pw@example.com", AuthorityError::Userinfo),
        ("example.com@evil.com", AuthorityError::Userinfo),
        ("h:80.evil.com", AuthorityError::InvalidPort),
        ("h:99999", AuthorityError::InvalidPort),
        ("h:65536", AuthorityError::InvalidPort),
        ("h:0", AuthorityError::InvalidPort),
        ("h:", AuthorityError::InvalidPort),
        ("h:-1", AuthorityError::InvalidPort),
        ("h:+80", AuthorityError::InvalidPort),
        ("h:0080000", AuthorityError::InvalidPort),
        ("h:8080:80", AuthorityError::InvalidIpv6),
        ("exa mple.com", AuthorityError::Whitespace),
        (" example.com", AuthorityError::Whitespace),
        ("example.com ", AuthorityError::Whitespace),
        ("example.com\t", AuthorityError::Whitespace),
        ("example.com\r\nX: y", AuthorityError::Whitespace),
        ("example.com/path", AuthorityError::PathOrQuery),
        ("example.com?x", AuthorityError::PathOrQuery),
        ("example.com#x", AuthorityError::PathOrQuery),
        ("a..b", AuthorityError::EmptyLabel),
        (".example.com", AuthorityError::EmptyLabel),
        ("example.com..", AuthorityError::EmptyLabel),
        (".", AuthorityError::Empty),
        (":80", AuthorityError::Empty),
        ("*.example.com", AuthorityError::InvalidChar('*')),
        ("exa%6dple.com", AuthorityError::InvalidChar('%')),
        ("ex\u{e4}mple.com", AuthorityError::InvalidChar('\u{e4}')),
        ("[::1", AuthorityError::InvalidIpv6),
        ("[::1]x", AuthorityError::InvalidIpv6),
        ("[not-v6]", AuthorityError::InvalidIpv6),
        ("[fe80::1%25eth0]", AuthorityError::InvalidIpv6),
        ("::1", AuthorityError::InvalidIpv6),
        ("[::1]:99999", AuthorityError::InvalidPort),
    ];
    for (input, want) in cases {
        assert_eq!(Authority::parse(input), Err(want.clone()), "{input:?}");
    }
    assert_eq!(
        Authority::parse_bytes(b"ex\xffample"),
        Err(AuthorityError::NotText)
    );
    let long = format!("{}.com", "a".repeat(64));
    assert_eq!(Authority::parse(&long), Err(AuthorityError::TooLong));
    let very_long = vec!["abc"; 80].join(".");
    assert_eq!(Authority::parse(&very_long), Err(AuthorityError::TooLong));
}

/// (pattern, received authority, default port, expected match)
const MATCHES: &[(&str, &str, bool)] = &[
    // port-agnostic entries
    ("example.com", "example.com", true),
    ("example.com", "example.com:8080", true),
    ("example.com", "EXAMPLE.com", true),
    ("EXAMPLE.COM", "example.com:443", true),
    ("example.com", "example.com.", true),
    ("example.com.", "example.com", true),
    ("example.com", "example.com.:80", true),
    ("example.com", "www.example.com", false),
    ("example.com", "example.com.evil.com", false),
    ("example.com", "evil-example.com", false),
    ("example.com", "example.co", false),
    // explicit any port
    ("example.com:*", "example.com:1234", true),
    ("example.com:*", "example.com", true),
    // explicit port (default port 80 applies to a Host without port)
    ("example.com:8080", "example.com:8080", true),
    ("example.com:8080", "example.com:8081", false),
    ("example.com:8080", "example.com", false),
    ("example.com:80", "example.com", true),
    ("example.com:80", "example.com:80", true),
    // one-label wildcard
    ("*.example.com", "a.example.com", true),
    ("*.example.com", "A.Example.COM:9000", true),
    ("*.example.com", "a.example.com.", true),
    ("*.example.com", "a.b.example.com", false),
    ("*.example.com", "example.com", false),
    ("*.example.com", "a.example.com.evil", false),
    ("*.example.com:8443", "a.example.com:8443", true),
    ("*.example.com:8443", "a.example.com:443", false),
    // multi-label wildcard
    ("**.example.com", "a.example.com", true),
    ("**.example.com", "a.b.c.example.com", true),
    ("**.example.com", "example.com", false),
    ("**.example.com", "aexample.com", false),
    ("**.example.com", "a.b.example.org", false),
    // IP literals
    ("127.0.0.1", "127.0.0.1:8000", true),
    ("127.0.0.1", "127.0.0.2", false),
    ("127.0.0.1:8000", "127.0.0.1:8000", true),
    ("127.0.0.1:8000", "127.0.0.1:8001", false),
    ("[::1]", "[::1]:8080", true),
    ("[::1]", "[0:0::1]", true),
    ("[::1]:8080", "[::1]:8080", true),
    ("[::1]:8080", "[::1]:8081", false),
    ("[::1]", "127.0.0.1", false),
    ("localhost", "127.0.0.1", false),
    ("127.0.0.1", "localhost", false),
];

#[test]
fn host_patterns_match_per_design() {
    for (pattern, received, want) in MATCHES {
        let p = HostPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
        let a = auth(received);
        assert_eq!(
            p.matches(&a, Some(80)),
            *want,
            "pattern {pattern:?} vs {received:?}"
        );
    }
}

#[test]
fn host_patterns_without_default_port() {
    let p = HostPattern::parse("example.com:443").unwrap();
    assert!(p.matches(&auth("example.com"), Some(443)));
    assert!(!p.matches(&auth("example.com"), Some(80)));
    assert!(!p.matches(&auth("example.com"), None));
}

#[test]
fn host_patterns_reject_bad_entries_with_clear_errors() {
    let cases: &[(&str, PatternError)] = &[
        ("", PatternError::Empty),
        ("*", PatternError::BareWildcard),
        ("**", PatternError::BareWildcard),
        ("*:*", PatternError::BareWildcard),
        ("*:8080", PatternError::BareWildcard),
        (" example.com", PatternError::Whitespace),
        ("https://example.com", PatternError::HasScheme),
        ("example.com/mcp", PatternError::Host(AuthorityError::PathOrQuery)),
        ("user@example.com", PatternError::Host(AuthorityError::Userinfo)),
        (
            "example.com:99999",
            PatternError::Host(AuthorityError::InvalidPort),
        ),
        (
            "example.com:http",
            PatternError::Host(AuthorityError::InvalidPort),
        ),
        ("a.*.example.com", PatternError::MisplacedWildcard),
        ("*example.com", PatternError::MisplacedWildcard),
        ("example.*", PatternError::MisplacedWildcard),
        ("***.example.com", PatternError::MisplacedWildcard),
        ("*.*.example.com", PatternError::MisplacedWildcard),
        ("*.10.0.0.1", PatternError::WildcardIp),
        ("*.", PatternError::Host(AuthorityError::Empty)),
        ("a..b", PatternError::Host(AuthorityError::EmptyLabel)),
        ("[::1", PatternError::Host(AuthorityError::InvalidIpv6)),
        ("::1", PatternError::Host(AuthorityError::InvalidIpv6)),
    ];
    for (input, want) in cases {
        assert_eq!(HostPattern::parse(input).as_ref(), Err(want), "{input:?}");
    }
    let msg = HostPattern::parse("*").unwrap_err().to_string();
    assert!(msg.contains("every host") && msg.contains("audit"), "{msg}");
}

#[test]
fn host_patterns_display_normalised() {
    let cases: &[(&str, &str)] = &[
        ("Example.COM.", "example.com"),
        ("example.com:*", "example.com"),
        ("example.com:8080", "example.com:8080"),
        ("*.Apps.example.com", "*.apps.example.com"),
        ("**.gw.example.com:443", "**.gw.example.com:443"),
        ("[0::1]:80", "[::1]:80"),
        ("10.0.0.1", "10.0.0.1"),
    ];
    for (input, shown) in cases {
        let p: HostPattern = input.parse().unwrap();
        assert_eq!(p.to_string(), *shown);
        assert_eq!(HostPattern::parse(shown).unwrap(), p, "round trip {input}");
    }
}

/// Every string up to `max_len` characters over `alphabet`.
pub(crate) fn all_strings(alphabet: &[&str], max_len: usize) -> Vec<String> {
    let mut all = vec![String::new()];
    let mut last = vec![String::new()];
    for _ in 0..max_len {
        last = last
            .iter()
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        all.extend(last.iter().cloned());
    }
    all
}

#[test]
fn the_one_pass_parser_agrees_with_the_thorough_one() {
    // Exhaustive over short values made of the characters that matter, plus the length limits.
    let mut values = all_strings(
        &["a", "Z", "0", "9", ".", ":", "-", "_", "[", "]", "@", " ", "é"],
        5,
    );
    let long = |n: usize| "a".repeat(n);
    for extra in [
        format!("{}.com", long(63)),
        format!("{}.com", long(64)),
        format!("{}.{}.{}.{}", long(63), long(63), long(63), long(61)),
        format!("{}.{}.{}.{}", long(63), long(63), long(63), long(62)),
        format!("{}.{}.{}.{}.", long(63), long(63), long(63), long(61)),
        "a:65535".into(),
        "a:65536".into(),
        "a:00080".into(),
        "a:000080".into(),
        "a:0".into(),
        "10.0.0.1:80".into(),
        "10.0.0.1.:80".into(),
        "1a.2.3.4".into(),
    ] {
        values.push(extra);
    }
    let mut fast = 0;
    for v in &values {
        if let Some(quick) = Authority::parse_plain_name(v.as_bytes()) {
            fast += 1;
            assert_eq!(Ok(quick), Authority::parse_thoroughly(v), "{v:?}");
        }
        assert_eq!(Authority::parse(v), Authority::parse_thoroughly(v), "{v:?}");
        assert_eq!(
            Authority::parse_bytes(v.as_bytes()),
            Authority::parse_thoroughly(v),
            "{v:?}"
        );
    }
    assert!(fast > 10_000, "the one-pass parser took only {fast} values");
    for common in [
        "mcp.example.test",
        "Example.COM:8080",
        "a.",
        "svc.ns.svc.cluster.local:8000",
        "localhost:3000",
    ] {
        assert!(
            Authority::parse_plain_name(common.as_bytes()).is_some(),
            "{common}"
        );
    }
}

#[test]
fn host_patterns_take_an_ipv4_address_in_brackets_too() {
    // The webhook writes `--allow-host [$(POD_IP)]`, which serves IPv4 and IPv6 pods alike.
    let p = HostPattern::parse("[10.0.0.7]").unwrap();
    assert_eq!(p, HostPattern::parse("10.0.0.7").unwrap());
    assert_eq!(p.to_string(), "10.0.0.7");
    assert!(p.matches(&auth("10.0.0.7:8000"), Some(80)));
    assert_eq!(
        HostPattern::parse("[10.0.0.7]:8000").unwrap(),
        HostPattern::parse("10.0.0.7:8000").unwrap()
    );
    assert!(
        HostPattern::parse("[fd00::7]")
            .unwrap()
            .matches(&auth("[fd00::7]:8000"), Some(80))
    );
    // A received Host keeps the strict form: brackets hold IPv6 only.
    assert_eq!(
        Authority::parse("[10.0.0.7]:8000"),
        Err(AuthorityError::InvalidIpv6)
    );
    assert!(HostPattern::parse("*.[10.0.0.7]").is_err());
}
