use proptest::prelude::*;

use super::*;

/// (method, tool, complete) of a single message.
type Found = (Option<String>, Option<String>, bool);

fn found(body: &str) -> Found {
    let p = scan(body.as_bytes());
    let m = p.messages.first().cloned().unwrap_or_default();
    let readable = !m.ambiguous && !p.broken;
    (
        m.method.filter(|_| readable),
        m.name.filter(|_| readable),
        p.complete,
    )
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn text_read_without_json_parsing_is_what_serde_reads_or_unreadable() {
    // Not UTF-8 (serde refuses it too): the method is unreadable, so the call is.
    let p = scan(b"{\"method\":\"tools/\xffcall\"}");
    assert!(p.messages[0].ambiguous && p.messages[0].method.is_none(), "{p:?}");
    // Non-ASCII keys fold as Unicode: `paramſ` is `params` but for case (the call is ambiguous), `ıd` is `id`
    // but for case (the answer's id is unsure; the call stays readable).
    assert!(scan("{\"paramſ\":{}}".as_bytes()).messages[0].ambiguous);
    let m = &scan("{\"ıd\":1,\"method\":\"ping\"}".as_bytes()).messages[0];
    assert!(
        m.id_unsure && !m.ambiguous && m.method.as_deref() == Some("ping"),
        "{m:?}"
    );
    // Escapes still go through the JSON parser.
    assert_eq!(
        found(r#"{"method":"tools\/call","params":{"name":"\u0065cho"}}"#),
        (s("tools/call"), s("echo"), true)
    );
}

#[test]
fn finds_method_and_tool_wherever_the_sdks_put_them() {
    let cases: &[(&str, Found)] = &[
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"render","arguments":{"a":[1,{"b":"}"}]}}}"#,
            (s("tools/call"), s("render"), true),
        ),
        (
            r#"{"method":"tools/call","params":{"_meta":{"progressToken":7},"arguments":{"name":"not me"},"name":"search"},"jsonrpc":"2.0","id":"x"}"#,
            (s("tools/call"), s("search"), true),
        ),
        (r#" { "id" : 1 , "method" : "ping" } "#, (s("ping"), None, true)),
        (
            r#"{"method":"tools\/call","params":{"name":"r\u00e9sum\u00e9"}}"#,
            (s("tools/call"), s("résumé"), true),
        ),
        (
            r#"{"method":"notifications/initialized"}"#,
            (s("notifications/initialized"), None, true),
        ),
        (r#"{"result":{},"id":1,"jsonrpc":"2.0"}"#, (None, None, true)),
        (r#"{}"#, (None, None, true)),
        // Cut off: what was read before the cut counts, for now.
        (
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"ren"#,
            (s("tools/call"), None, false),
        ),
        (r#"{"id":1,"params":{"arguments":{"x":"#, (None, None, false)),
        (r#"{"id":12"#, (None, None, false)),
        (r#"{"method":7}"#, (None, None, true)),
        // Twice: the last one wins, as in every common JSON parser; a later params replaces the name too.
        (
            r#"{"method":"ping","method":"tools/call"}"#,
            (s("tools/call"), None, true),
        ),
        (
            r#"{"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            (s("tools/call"), s("b"), true),
        ),
        (
            r#"{"method":"tools/call","params":{"name":"a"},"params":{}}"#,
            (s("tools/call"), None, true),
        ),
        (r#"{"method":"tools/call","method":7}"#, (None, None, true)),
        // Keys compare decoded.
        (
            r#"{"m\u0065thod":"ping","method":"x","\u006d\u0065\u0074\u0068\u006f\u0064":"tools/call","p\u0061rams":{"n\u0061me":"render"}}"#,
            (s("tools/call"), s("render"), true),
        ),
        // Another case is another key to serde, but the same one to Go's encoding/json: not readable.
        (r#"{"method":"ping","Method":"tools/call"}"#, (None, None, true)),
        (
            r#"{"method":"tools/call","params":{"name":"cheap","NAME":"render"}}"#,
            (None, None, true),
        ),
        (r#"{"method":"tools/call","paramſ":{}}"#, (None, None, true)),
    ];
    for (body, want) in cases {
        assert_eq!(&found(body), want, "{body}");
    }
}

#[test]
fn reads_the_uri_of_resource_calls_and_the_id_of_every_call() {
    let p = scan(
        br#"[{"id":"ab","method":"resources/read","params":{"name":"x","uri":"file:///a","uri":"file:///b"}},
             {"id":-7.5e1,"method":"prompts/get","params":{"name":"greet"}},
             {"method":"tools/call","id":3,"ID":4,"params":{"name":"t"}},
             {"id":1,"id":null,"method":"tools/list"},
             {"method":"resources/read","params":{"URI":"file:///c"}}]"#,
    );
    assert!(p.complete && !p.broken);
    let m = &p.messages;
    assert_eq!(m[0].target(), Some("file:///b"), "the uri, last one winning");
    assert_eq!(m[0].sure_id(), Some(&serde_json::json!("ab")));
    assert_eq!(m[1].target(), Some("greet"));
    assert_eq!(m[1].sure_id(), Some(&serde_json::json!(-75.0)));
    assert_eq!(m[2].target(), Some("t"));
    assert!(m[2].id_unsure && m[2].sure_id().is_none(), "`ID` is the id to Go");
    assert_eq!(m[3].id, None, "a later id that is no string or number");
    assert!(m[4].ambiguous, "`URI` is the uri to Go");
    // The guard reads on until it has what a resource call names.
    assert!(scan(br#"{"method":"resources/read","params":{"name":"x""#).wants_more());
    assert!(!scan(br#"{"method":"resources/read","params":{"uri":"file:///a""#).wants_more());
    assert!(scan(br#"{"method":"prompts/get","#).wants_more());
}

#[test]
fn batches_list_their_object_elements_and_anything_else_is_broken() {
    let p = scan(br#"[{"method":"ping"}, 7, {"method":"tools/call","params":{"name":"render"}}, [], {"id":1,"result":{}}]"#);
    assert!(p.batch && p.complete && !p.broken);
    let methods: Vec<_> = p.messages.iter().map(|m| m.method.as_deref()).collect();
    assert_eq!(methods, [Some("ping"), Some("tools/call"), None]);
    assert_eq!(p.messages[1].name.as_deref(), Some("render"));
    let p = scan(br#"[{"method":"ping"},{"meth"#);
    assert!(p.batch && !p.complete);
    for body in [
        &b"\xff\xfe{\x00\"\x00"[..],
        b"\"tools/call\"",
        b"7",
        b"{\"method\" \"x\"}",
        b"{\"method\":\"a\nb\"}",
        b"{\"a\":1}}",
    ] {
        let p = scan(body);
        // Broken, or at least never a call another parser could read differently.
        assert!(p.broken || p.complete, "{body:?}: {p:?}");
        assert!(p.messages.iter().all(|m| m.method.is_none()), "{body:?}: {p:?}");
    }
}

#[test]
fn wants_more_until_the_limits_have_what_they_need() {
    assert!(scan(br#"{"id":1,"#).wants_more());
    assert!(!scan(br#"{"method":"ping","#).wants_more());
    assert!(scan(br#"{"method":"tools/call","#).wants_more());
    assert!(!scan(br#"{"method":"tools/call","params":{"name":"x""#).wants_more());
    assert!(!scan(br#"{"id":1}"#).wants_more(), "complete");
    assert!(scan(br#"[{"method":"ping"}"#).wants_more(), "a batch to its end");
    assert!(scan(b"   ").wants_more());
}

#[test]
fn a_watch_cuts_a_body_that_names_another_call_after_the_charge() {
    let prefix = r#"{"method":"tools/call","params":{"name":"cheap","arguments":{"pad":"xx"#;
    let mut scanner = Scanner::default();
    scanner.feed(prefix.as_bytes());
    let watch = Watch::new(scanner, "tools/call".into(), Some("cheap".into()));
    let rest_ok = r#"xx"}},"method":"tools/call","id":1}"#;
    let mut w = watch.clone();
    assert_eq!(w.feed(rest_ok.as_bytes()), Ok(()), "the same method again");
    for rest in [
        r#"xx"}},"method":"ping"}"#,
        r#"xx"}},"params":{"name":"render"}}"#,
        r#"xx"}},"params":{}}"#,
        r#"xx"}},"Method":"ping"}"#,
        r#"xx"},"name":"render"}}"#,
        "xx\u{1}",
    ] {
        let mut w = watch.clone();
        assert!(w.feed(rest.as_bytes()).is_err(), "{rest}");
    }
}

/// A generated body: JSON text with its pieces chosen to hit the scanner's cases.
fn spaced(ws: &'static str) -> impl Strategy<Value = String> {
    proptest::sample::select(vec!["", "", " ", "\n\t ", "\r\n"]).prop_map(move |w| format!("{ws}{w}"))
}

fn key(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(names.to_vec()).prop_map(str::to_owned)
}

fn junk() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("1".to_owned()),
        Just("-2.5e3".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just(r#""a \"quoted\" } ] , : value""#.to_owned()),
        Just(r#""\u005c\"\\""#.to_owned()),
        Just(r#""method""#.to_owned()),
        (0usize..3000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((key(&["method", "name", "params", "a"]), inner), 0..4).prop_map(|v| {
                let members: Vec<String> = v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

fn object(members: Vec<(String, String)>, ws: Vec<String>) -> String {
    let mut out = format!("{}{{", ws[0]);
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let w = &ws[(i + 1) % ws.len()];
        out.push_str(&format!("{w}\"{k}\"{w}:{w}{v}{w}"));
    }
    out.push('}');
    out
}

fn params() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        (
            key(&["name", "n\\u0061me", "NAME", "name", "uri", "\\u0075ri", "Uri"]),
            proptest::sample::select(vec![r#""render""#, r#""cheap""#, r#""r\u0065nder""#, "7",])
                .prop_map(str::to_owned)
        ),
        (key(&["arguments", "_meta"]), junk()),
    ];
    (
        proptest::collection::vec(member, 0..4),
        proptest::collection::vec(spaced(""), 1..3),
    )
        .prop_map(|(m, ws)| object(m, ws))
}

/// One JSON-RPC message, its keys in any order, repeated, escaped or cased otherwise.
pub fn message() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        (
            key(&["method", "m\\u0065thod", "Method", "method"]),
            proptest::sample::select(vec![
                r#""tools/call""#,
                r#""tools\/call""#,
                r#""ping""#,
                r#""tools/list""#,
                r#""prompts/get""#,
                r#""resources\/read""#,
                "null",
            ])
            .prop_map(str::to_owned)
        ),
        (
            key(&["params", "p\\u0061rams", "params"]),
            prop_oneof![params(), junk()]
        ),
        (key(&["id", "jsonrpc", "pad", "ID", "\\u0069d"]), junk()),
        // Padding that pushes what follows past the peeked prefix.
        (
            key(&["pad"]),
            (0usize..12_000).prop_map(|n| format!("\"{}\"", "p".repeat(n)))
        ),
    ];
    (
        proptest::collection::vec(member, 0..6),
        proptest::collection::vec(spaced(""), 1..3),
    )
        .prop_map(|(m, ws)| object(m, ws))
}

/// A request body: one message, or a batch of them (with the odd element that is not an object).
pub fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => message(),
        1 => proptest::collection::vec(prop_oneof![4 => message(), 1 => junk()], 0..12)
            .prop_map(|v| format!("[{}]", v.join(","))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the scanner reports of a whole body is what serde_json (last key wins) reads, or unreadable;
    /// fed in two pieces, cut anywhere, it reports the same; and a reading taken at the cut either still holds
    /// for the whole body or the watch over the rest says so.
    #[test]
    fn the_scanner_reads_what_a_json_parser_reads(body in body(), cut in any::<prop::sample::Index>()) {
        let bytes = body.as_bytes();
        let whole = scan(bytes);
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(bytes);
        if let Ok(v) = &parsed {
            prop_assert!(whole.complete && !whole.broken, "{whole:?}");
            let objects: Vec<&serde_json::Value> = match v.as_array() {
                Some(a) => a.iter().filter(|e| e.is_object()).collect(),
                None => vec![v],
            };
            prop_assert_eq!(whole.batch, v.is_array());
            prop_assert_eq!(whole.messages.len(), objects.len());
            for (m, o) in whole.messages.iter().zip(objects) {
                prop_assert!(m.ended);
                if !m.ambiguous {
                    prop_assert_eq!(m.method.as_deref(), o["method"].as_str());
                    prop_assert_eq!(m.name.as_deref(), o["params"]["name"].as_str());
                    prop_assert_eq!(m.uri.as_deref(), o["params"]["uri"].as_str());
                }
                // An id read is the one serde reads (an id too long to keep is not read).
                if let Some(id) = &m.id {
                    prop_assert_eq!(Some(id), o.get("id"));
                }
                let short = |v: &serde_json::Value| v.to_string().len() < 1000;
                if !m.id_unsure && let Some(id) = o.get("id").filter(|v| (v.is_string() || v.is_number()) && short(v)) {
                    prop_assert_eq!(m.id.as_ref(), Some(id));
                }
            }
        }
        let at = cut.index(bytes.len() + 1);
        let mut scanner = Scanner::default();
        scanner.feed(&bytes[..at]);
        let early = scanner.peeked().clone();
        let mut split = scanner.clone();
        split.feed(&bytes[at..]);
        prop_assert_eq!(split.peeked(), &whole, "fed in two pieces at {}", at);
        // A single call read early, watched over the rest.
        if let (false, Some(m)) = (early.batch || early.broken, early.messages.first())
            && let (false, Some(method)) = (m.ambiguous, m.method.clone())
        {
            let target = m.target().map(str::to_owned);
            let mut watch = Watch::new(scanner, method.clone(), target.clone());
            if watch.feed(&bytes[at..]).is_ok()
                && let Ok(v) = &parsed
            {
                prop_assert_eq!(v["method"].as_str(), Some(method.as_str()));
                if let Some(t) = &target {
                    let field = mcp_guard_config::access::named_by(&method).unwrap();
                    prop_assert_eq!(v["params"][field].as_str(), Some(t.as_str()));
                }
            }
        }
    }
}

/// A body with bytes that end or break strings and values put in anywhere: quotes, backslashes, control
/// characters, brackets, bytes that are no UTF-8.
fn garbled() -> impl Strategy<Value = Vec<u8>> {
    let edit = (
        any::<prop::sample::Index>(),
        proptest::sample::select(b"\"\\\x01\x1f\n\t \xff\xc3{}[],:x1-e".to_vec()),
    );
    (body(), proptest::collection::vec(edit, 0..6)).prop_map(|(body, edits)| {
        let mut bytes = body.into_bytes();
        for (at, b) in edits {
            bytes.insert(at.index(bytes.len() + 1), b);
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// The runs `feed` passes over at once leave the scanner where the byte-by-byte state machine would, on any
    /// bytes, valid JSON or not, fed whole or in three pieces.
    #[test]
    fn the_runs_are_the_state_machine(bytes in garbled(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let mut reference = Scanner::default();
        reference.feed_bytewise(&bytes);
        prop_assert_eq!(&scan(&bytes), reference.peeked());
        let (a, b) = (a.index(bytes.len() + 1), b.index(bytes.len() + 1));
        let (a, b) = (a.min(b), a.max(b));
        let mut pieces = Scanner::default();
        for piece in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
            pieces.feed(piece);
        }
        prop_assert_eq!(pieces.peeked(), reference.peeked());
    }
}

#[test]
fn agrees_with_serde_on_every_prefix_of_sdk_bodies() {
    let bodies = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"render","arguments":{"q":"a \"quoted\" } ] value","n":[1,2.5e3,true,null]}}}"#,
        r#"{"params":{"arguments":{},"name":"x"},"method":"tools/call","id":"é"}"#,
    ];
    for body in bodies {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let whole = scan(body.as_bytes());
        let m = &whole.messages[0];
        assert_eq!(m.method.as_deref(), v["method"].as_str(), "{body}");
        assert_eq!(m.name.as_deref(), v["params"]["name"].as_str(), "{body}");
        for cut in 0..body.len() {
            let part = scan(&body.as_bytes()[..cut]);
            assert!(!part.complete && !part.broken, "{cut}");
        }
    }
}
