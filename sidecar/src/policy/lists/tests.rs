use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::policy::peek::scan;

fn filter(body: &str) -> ListFilter {
    let config: mcp_guard_config::GuardConfig = serde_json::from_value(json!({
        "allowedHosts": ["a.com"],
        "auth": {"resources": ["http://a.com/mcp"], "issuers": [{"issuer": "https://i.example", "jwksUri": "https://i.example/jwks"}]},
        "access": {"rules": [{"from": [{"subject": "alice"}],
                              "to": [{"method": "tools/call", "names": ["read_*"]},
                                     {"method": "resources/read", "names": ["file:///docs/*"]}]}]}
    }))
    .unwrap();
    let allowlist = Arc::new(Allowlist::compile(&config).unwrap());
    let alice = Identity {
        issuer: "https://i.example".into(),
        subject: Some("alice".into()),
        client_id: None,
        scopes: Vec::new(),
        groups: Vec::new(),
        service_account: None,
        expires_at: u64::MAX,
    };
    ListFilter::new(&scan(body.as_bytes()), allowlist, Some(alice)).unwrap()
}

fn tools(names: &[&str]) -> Value {
    Value::from(names.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>())
}

#[test]
fn answers_to_list_calls_show_only_what_the_caller_may_call() {
    let f = filter(
        r#"[{"id":1,"method":"tools/list"},{"id":"r","method":"resources/templates/list"},{"id":2,"method":"ping"}]"#,
    );
    let mut answer = json!([
        {"id": 1.0, "result": {"tools": tools(&["read_a", "delete", "read_b"]), "nextCursor": "c"}},
        {"id": "r", "result": {"resourceTemplates": [{"uriTemplate": "file:///docs/{p}"}, {"uriTemplate": "file:///etc/{p}"}]}},
        {"id": 2, "result": {"tools": tools(&["delete"])}},
        {"id": 1, "result": {"tools": [{"name": 7}, {"title": "no name"}]}}
    ]);
    f.filter(&mut answer);
    assert_eq!(
        answer[0]["result"],
        json!({"tools": tools(&["read_a", "read_b"]), "nextCursor": "c"})
    );
    assert_eq!(
        answer[1]["result"]["resourceTemplates"],
        json!([{"uriTemplate": "file:///docs/{p}"}])
    );
    assert_eq!(
        answer[2]["result"]["tools"],
        tools(&["delete"]),
        "the answer to ping is not a list"
    );
    assert_eq!(
        answer[3]["result"]["tools"],
        json!([]),
        "entries without a name are not shown"
    );
    // An id the guard is not sure of: every answer is filtered.
    let f = filter(r#"{"ID":1,"id":1,"method":"tools/list"}"#);
    let mut answer = json!({"id": 99, "result": {"tools": tools(&["delete", "read_x"])}});
    f.filter(&mut answer);
    assert_eq!(answer["result"]["tools"], tools(&["read_x"]));
    assert!(
        f.json(b"{\"id\":1,\"result\":{\"tools\":[{\"name\":NaN}]}}")
            .is_err()
    );
}

#[test]
fn event_streams_are_written_again_from_the_lines_read_with_list_answers_filtered() {
    let f = filter(r#"{"id":1,"method":"tools/list"}"#);
    let stream = "\u{feff}: comment\r\nid: 7\r\n\r\ndata: {\"jsonrpc\":\"2.0\",\n\
                  data: \"id\":1,\"result\":{\"tools\":[{\"name\":\"delete\"},{\"name\":\"read_a\"}]}}\revent: message\r\r\
                  data: {\"method\":\"notifications/progress\"}\n\ndata: {\"unended\":";
    let mut whole = Vec::new();
    let mut e = EventFilter::new(f.clone());
    e.feed(stream.as_bytes(), &mut whole).unwrap();
    e.finish();
    let text = String::from_utf8(whole.clone()).unwrap();
    assert_eq!(
        text,
        ": comment\nid: 7\n\n\
         data: {\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[{\"name\":\"read_a\"}]}}\nevent: message\n\n\
         data: {\"method\":\"notifications/progress\"}\n\n"
    );
    // Fed byte by byte, the same.
    let mut e = EventFilter::new(f.clone());
    let mut bytewise = Vec::new();
    for b in stream.as_bytes() {
        e.feed(std::slice::from_ref(b), &mut bytewise).unwrap();
    }
    assert_eq!(bytewise, whole);
    // Not JSON: refused, never passed; over the bound: refused.
    let mut e = EventFilter::new(f.clone());
    assert!(e.feed(b"data: {\"result\":NaN}\n\n", &mut Vec::new()).is_err());
    let mut e = EventFilter::new(f);
    let big = vec![b'x'; LIST_LIMIT + 1];
    assert!(e.feed(&big, &mut Vec::new()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the stream and however it is cut, the events a client reads from the guard's output carry no
    /// tool the caller may not call.
    #[test]
    fn no_cut_of_a_stream_lets_a_hidden_tool_through(
        names in prop::collection::vec(prop::sample::select(vec!["read_a", "delete", "read_b", "drop"]), 0..5),
        ending in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let f = filter(r#"{"id":1,"method":"tools/list"}"#);
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools(&names)}});
        let pretty = serde_json::to_string_pretty(&answer).unwrap();
        let data: String = pretty.lines().map(|l| format!("data: {l}{ending}")).collect();
        let stream = format!(": hi{ending}{ending}{data}{ending}");
        let bytes = stream.as_bytes();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut e = EventFilter::new(f);
        let mut out = Vec::new();
        let mut from = 0;
        for to in at.into_iter().chain([bytes.len()]) {
            e.feed(&bytes[from..to], &mut out).unwrap();
            from = to;
        }
        let text = String::from_utf8(out).unwrap();
        let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        prop_assert_eq!(data.len(), 1, "{}", text);
        let v: Value = serde_json::from_str(data[0]).unwrap();
        let shown: Vec<&str> = v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        let want: Vec<&str> = names.iter().copied().filter(|n| n.starts_with("read_")).collect();
        prop_assert_eq!(shown, want);
    }
}
