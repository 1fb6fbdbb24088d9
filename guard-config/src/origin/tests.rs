use super::*;
use crate::host::AuthorityError;

#[test]
fn origins_parse() {
    assert_eq!(Origin::parse("null"), Ok(Origin::Null));
    let cases: &[(&str, Option<u16>)] = &[
        ("https://a.com", Some(443)),
        ("https://a.com:443", Some(443)),
        ("http://a.com", Some(80)),
        ("HTTP://A.com:8080", Some(8080)),
        ("http://[::1]:3000", Some(3000)),
        ("http://127.0.0.1", Some(80)),
        ("chrome-extension://abcdef", None),
        ("vscode-webview://abc", None),
    ];
    for (input, port) in cases {
        let o = Origin::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(o.effective_port(), *port, "{input}");
    }
}

#[test]
fn malformed_origins_are_rejected() {
    let cases: &[(&str, OriginError)] = &[
        ("", OriginError::Empty),
        ("Null", OriginError::NotAnOrigin),
        ("a.com", OriginError::NotAnOrigin),
        ("https:/a.com", OriginError::NotAnOrigin),
        ("https://a.com/", OriginError::HasPath),
        ("https://a.com/x", OriginError::HasPath),
        ("https://a.com?x", OriginError::HasPath),
        ("1http://a.com", OriginError::InvalidScheme),
        ("ht tp://a.com", OriginError::InvalidScheme),
        ("://a.com", OriginError::InvalidScheme),
        ("https://", OriginError::Authority(AuthorityError::Empty)),
        (
            "https://u@a.com",
            OriginError::Authority(AuthorityError::Userinfo),
        ),
        (
            "https://a.com:99999",
            OriginError::Authority(AuthorityError::InvalidPort),
        ),
        (
            "https://a.com:80.evil.com",
            OriginError::Authority(AuthorityError::InvalidPort),
        ),
        (
            "https://a.com ",
            OriginError::Authority(AuthorityError::Whitespace),
        ),
        ("https://a.com, https://b.com", OriginError::HasPath),
        (
            "https://a.com,b",
            OriginError::Authority(AuthorityError::InvalidChar(',')),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(Origin::parse(input), Err(want.clone()), "{input:?}");
    }
    assert_eq!(Origin::parse_bytes(b"https://\xff"), Err(OriginError::NotText));
}

/// (pattern, received origin, expected)
const MATCHES: &[(&str, &str, bool)] = &[
    ("https://a.com", "https://a.com", true),
    ("https://a.com", "https://a.com:443", true),
    ("https://a.com:443", "https://a.com", true),
    ("https://A.COM", "HTTPS://a.com", true),
    ("https://a.com", "http://a.com", false),
    ("https://a.com", "https://a.com:8443", false),
    ("https://a.com", "https://b.a.com", false),
    ("https://a.com", "https://a.com.", true),
    ("http://a.com", "http://a.com:80", true),
    ("http://localhost:3000", "http://localhost:3000", true),
    ("http://localhost:3000", "http://localhost:3001", false),
    ("http://localhost:3000", "http://localhost", false),
    ("http://localhost:*", "http://localhost:3001", true),
    ("http://localhost:*", "http://localhost", true),
    ("http://localhost:*", "https://localhost", false),
    ("https://*.example.com", "https://app.example.com", true),
    ("https://*.example.com", "https://a.b.example.com", false),
    ("https://*.example.com", "https://example.com", false),
    ("https://**.example.com", "https://a.b.example.com", true),
    ("http://[::1]:3000", "http://[::1]:3000", true),
    ("null", "null", true),
    ("null", "https://a.com", false),
    ("https://a.com", "null", false),
    ("chrome-extension://abc", "chrome-extension://abc", true),
    ("chrome-extension://abc", "chrome-extension://abc:1", false),
    // Extension and webview origins as browsers and editors send them: exact entries match only themselves.
    (
        "chrome-extension://mhjfbmdgcfjbbpaeojofohoefgiehjai",
        "chrome-extension://mhjfbmdgcfjbbpaeojofohoefgiehjai",
        true,
    ),
    (
        "chrome-extension://mhjfbmdgcfjbbpaeojofohoefgiehjai",
        "chrome-extension://aaaabbbbccccddddeeeeffffgggghhhh",
        false,
    ),
    (
        "moz-extension://5d5e8f6c-3c0b-4a8e-9b64-1f2e3d4c5b6a",
        "moz-extension://5D5E8F6C-3C0B-4A8E-9B64-1F2E3D4C5B6A",
        true,
    ),
    (
        "vscode-webview://1ccsq3cs7d1c5crnmv8cbg1hgnl69vnuhmasab8m1htsqjkmg1ql",
        "vscode-webview://1ccsq3cs7d1c5crnmv8cbg1hgnl69vnuhmasab8m1htsqjkmg1ql",
        true,
    ),
    // The opt-in per-scheme wildcard: any host of that scheme, nothing of another.
    (
        "chrome-extension://*",
        "chrome-extension://aaaabbbbccccddddeeeeffffgggghhhh",
        true,
    ),
    ("chrome-extension://*", "CHROME-EXTENSION://abc", true),
    ("chrome-extension://*", "moz-extension://abc", false),
    ("chrome-extension://*", "https://abc", false),
    ("chrome-extension://*", "null", false),
    (
        "moz-extension://*",
        "moz-extension://5d5e8f6c-3c0b-4a8e-9b64-1f2e3d4c5b6a",
        true,
    ),
    ("vscode-webview://*", "vscode-webview://x1", true),
];

#[test]
fn origin_patterns_match_per_design() {
    for (pattern, received, want) in MATCHES {
        let p = OriginPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        let o = Origin::parse(received).unwrap_or_else(|e| panic!("{received}: {e}"));
        assert_eq!(p.matches(&o), *want, "pattern {pattern:?} vs {received:?}");
    }
}

#[test]
fn origin_patterns_reject_bad_entries() {
    let cases: &[(&str, PatternError)] = &[
        ("", PatternError::Empty),
        ("*", PatternError::BareWildcard),
        ("https://*", PatternError::WebSchemeWildcard("https".into())),
        ("HTTP://*", PatternError::WebSchemeWildcard("http".into())),
        ("wss://*/", PatternError::WebSchemeWildcard("wss".into())),
        ("chrome-extension://*:1", PatternError::BareWildcard),
        ("chrome-extension://**", PatternError::BareWildcard),
        ("a.com", PatternError::NoScheme),
        ("1x://a.com", PatternError::InvalidScheme("1x".into())),
        ("https://a.com/app", PatternError::OriginHasPath),
        ("https://a.com x", PatternError::Whitespace),
        ("https://a.*.com", PatternError::MisplacedWildcard),
        ("https://a.com:0", PatternError::Host(AuthorityError::InvalidPort)),
        ("https://u@a.com", PatternError::Host(AuthorityError::Userinfo)),
    ];
    for (input, want) in cases {
        assert_eq!(OriginPattern::parse(input).as_ref(), Err(want), "{input:?}");
    }
}

#[test]
fn origin_patterns_display_normalised() {
    let cases: &[(&str, &str)] = &[
        ("https://A.com:443", "https://a.com"),
        ("https://a.com/", "https://a.com"),
        ("HTTP://a.com:8080", "http://a.com:8080"),
        ("http://localhost:*", "http://localhost:*"),
        ("null", "null"),
        ("chrome-extension://abc", "chrome-extension://abc"),
        ("Chrome-Extension://*", "chrome-extension://*"),
    ];
    for (input, shown) in cases {
        let p: OriginPattern = input.parse().unwrap();
        assert_eq!(p.to_string(), *shown, "{input}");
        assert_eq!(OriginPattern::parse(shown).unwrap(), p, "round trip {input}");
    }
}

#[test]
fn the_one_pass_parser_agrees_with_the_thorough_one() {
    let schemes = ["http", "HTTPS", "a+b-c.d", "1a", "", "h_t", "nu", "null"];
    let seps = ["://", ":/", "//", ":", "", ":///"];
    let authorities = crate::host::tests::all_strings(
        &["a", "Z", "0", ".", ":", "-", "[", "]", "@", "/", "?", " ", "é"],
        4,
    );
    let mut fast = 0;
    for scheme in schemes {
        for sep in seps {
            for authority in &authorities {
                let v = format!("{scheme}{sep}{authority}");
                if let Some(quick) = Origin::parse_plain(v.as_bytes()) {
                    fast += 1;
                    assert_eq!(Ok(quick), Origin::parse_thoroughly(&v), "{v:?}");
                }
                assert_eq!(Origin::parse(&v), Origin::parse_thoroughly(&v), "{v:?}");
                assert_eq!(
                    Origin::parse_bytes(v.as_bytes()),
                    Origin::parse_thoroughly(&v),
                    "{v:?}"
                );
            }
        }
    }
    assert!(fast > 1_000, "the one-pass parser took only {fast} values");
    for common in [
        "https://app.example.test",
        "http://localhost:3000",
        "vscode-webview://x1",
    ] {
        assert!(Origin::parse_plain(common.as_bytes()).is_some(), "{common}");
    }
}
