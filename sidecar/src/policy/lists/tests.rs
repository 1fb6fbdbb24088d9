use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::policy::peek::scan;

/// The filter for alice, who may call the `read_*` tools and read `file:///docs/*`, of a request with `body`.
fn filter_for(body: Option<&str>) -> ListFilter {
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
    let peeked = body.map(|b| scan(b.as_bytes()));
    ListFilter::new(allowlist, Some(alice), peeked.as_ref()).unwrap()
}

fn filter(body: &str) -> ListFilter {
    filter_for(Some(body))
}

fn tools(names: &[&str]) -> Value {
    Value::from(names.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>())
}

#[test]
fn list_answers_show_only_what_the_caller_may_call_whatever_request_they_answer() {
    let f = filter(
        r#"[{"id":1,"method":"tools/list"},{"id":"r","method":"resources/templates/list"},{"id":2,"method":"ping"}]"#,
    );
    assert!(f.asks_for_list());
    let mut answer = json!([
        {"id": 1.0, "result": {"tools": tools(&["read_a", "delete", "read_b"]), "nextCursor": "c"}},
        {"id": "r", "result": {"resourceTemplates": [{"uriTemplate": "file:///docs/{p}"}, {"uriTemplate": "file:///etc/{p}"}]}},
        {"id": 2, "result": {"tools": tools(&["delete", "read_c"])}},
        {"id": 1, "result": {"tools": [{"name": 7}, {"title": "no name"}, "read_d"]}},
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"tools": tools(&["delete"])}}
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
        tools(&["read_c"]),
        "an answer to another request (a replayed one, say) is filtered by its shape"
    );
    assert_eq!(
        answer[3]["result"]["tools"],
        json!([]),
        "entries without a name are not shown"
    );
    assert_eq!(
        answer[4]["params"]["tools"],
        tools(&["delete"]),
        "only results are lists"
    );
    // Not a list call: its JSON answer is not read whole; without a body neither.
    assert!(!filter(r#"{"id":1,"method":"tools/call","params":{"name":"read_a"}}"#).asks_for_list());
    assert!(!filter_for(None).asks_for_list());
    assert!(
        f.json(b"{\"id\":1,\"result\":{\"tools\":[{\"name\":NaN}]}}")
            .is_err()
    );
}

#[test]
fn keys_a_lax_parser_reads_as_the_list_are_filtered_too() {
    let f = filter_for(None);
    let mut answer = json!({
        "id": 1,
        "RESULT": {"Tools": tools(&["delete", "read_a"]), "reſources": [{"uri": "file:///etc/x"}]},
        "result": {"resourceTemplates": {"0": {"uriTemplate": "file:///etc/{p}"}}, "prompts": "x"}
    });
    f.filter(&mut answer);
    assert_eq!(
        answer,
        json!({"id": 1,
               "RESULT": {"Tools": tools(&["read_a"]), "reſources": []},
               "result": {"resourceTemplates": [], "prompts": []}})
    );
    // An entry that names itself twice, or but for case, may be read as either name: not shown.
    let mut answer = json!({"result": {"tools": [
        {"name": "read_a", "NAME": "delete"},
        {"Name": "read_a"},
        {"name": "read_b", "description": "delete"}
    ]}});
    f.filter(&mut answer);
    assert_eq!(
        answer["result"]["tools"],
        json!([{"name": "read_b", "description": "delete"}])
    );
}

#[test]
fn event_streams_are_written_again_from_the_fields_read_with_list_answers_filtered() {
    let f = filter_for(None);
    let stream = "\u{feff}: comment\r\nid: 7\r\n\r\ndata: {\"jsonrpc\":\"2.0\",\n\
                  data: \"id\":1,\"result\":{\"tools\":[{\"name\":\"delete\"},{\"name\":\"read_a\"}]}}\revent: message\r\
                  DATA: {\"result\":{\"tools\":[{\"name\":\"delete\"}]}}\n data: x\r\r\
                  event: endpoint\ndata: /messages?session=1\n\n\
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
         event: endpoint\ndata: /messages?session=1\n\n\
         data: {\"method\":\"notifications/progress\"}\n\n"
    );
    // Fed byte by byte, the same.
    let mut e = EventFilter::new(f.clone());
    let mut bytewise = Vec::new();
    for b in stream.as_bytes() {
        e.feed(std::slice::from_ref(b), &mut bytewise).unwrap();
    }
    assert_eq!(bytewise, whole);
    // A message event that is not JSON the guard reads: refused, never passed, also when named loosely.
    for event in [
        "data: {\"result\":NaN}\n\n",
        "event: Message \ndata: {\"result\":NaN}\n\n",
    ] {
        let mut e = EventFilter::new(f.clone());
        assert!(e.feed(event.as_bytes(), &mut Vec::new()).is_err(), "{event}");
    }
    // Over the bound: refused.
    let mut e = EventFilter::new(f);
    let big = vec![b'x'; LIST_LIMIT + 1];
    assert!(e.feed(&big, &mut Vec::new()).is_err());
}

/// The events a client reads from a stream, parsed as the WHATWG `EventSource` rules say, independently of
/// [`EventFilter`]: `(type, last event id, data)` of each dispatched event.
fn client_events(stream: &[u8]) -> Vec<(String, String, String)> {
    let text = String::from_utf8_lossy(stream);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['\r', '\n']) {
        lines.push(&rest[..i]);
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    let (mut events, mut kind, mut data, mut id) = (Vec::new(), String::new(), String::new(), String::new());
    for line in lines {
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                let kind = std::mem::take(&mut kind);
                let kind = if kind.is_empty() { "message".into() } else { kind };
                events.push((kind, id.clone(), std::mem::take(&mut data)));
            }
            kind.clear();
            data.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "event" => kind = value.into(),
            "id" if !value.contains('\0') => id = value.into(),
            _ => {}
        }
    }
    events
}

const NAMES: [&str; 4] = ["read_a", "delete", "read_b", "drop"];
const HIDDEN: [&str; 2] = ["delete", "drop"];

/// Every name in `v`, in order, by a walk that knows nothing of the filter.
fn listed(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) if NAMES.contains(&s.as_str()) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(listed).collect(),
        Value::Object(fields) => fields.values().flat_map(listed).collect(),
        _ => Vec::new(),
    }
}

/// The names alice may see of those [`listed`] in a generated answer: tools named `read_*`, no prompt.
fn visible(v: &Value) -> Vec<String> {
    match v.get("result").and_then(|r| r.get("prompts")) {
        Some(_) => Vec::new(),
        None => listed(v).into_iter().filter(|n| n.starts_with("read_")).collect(),
    }
}

/// One generated event: a list answer (under any list's key, maybe one cased otherwise, maybe with a duplicate
/// `result`), a server notification, the legacy transport's endpoint event, or a comment; pretty-printed or not.
fn event() -> impl Strategy<Value = String> {
    let names = prop::collection::vec(prop::sample::select(NAMES.to_vec()), 0..4);
    let key = prop::sample::select(vec![("tools", "name"), ("prompts", "name"), ("TOOLS", "name")]);
    let list = (names.clone(), key, any::<u8>(), any::<bool>(), any::<bool>()).prop_map(
        |(names, (key, field), id, pretty, shadowed)| {
            let entries: Vec<Value> = names.iter().map(|n| json!({ field: n })).collect();
            let answer = json!({"jsonrpc": "2.0", "id": id, "result": {key: entries, "nextCursor": "c"}});
            let text = match pretty {
                true => serde_json::to_string_pretty(&answer).unwrap(),
                false => answer.to_string(),
            };
            let text = match shadowed {
                // A duplicate `result` before the one every common parser keeps.
                true => text.replacen('{', r#"{"result":{"tools":[{"name":"drop"}]},"#, 1),
                false => text,
            };
            text.lines().map(|l| format!("data: {l}\n")).collect::<String>()
        },
    );
    prop_oneof![
        4 => list,
        1 => Just("data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n".to_owned()),
        1 => Just("event: endpoint\ndata: /messages?session=a\n".to_owned()),
        1 => Just(": keep-alive\n".to_owned()),
        1 => (0..99u8).prop_map(|id| format!("id: {id}\n")),
        1 => Just("data: {\"result\":{\"tools\":[{\"name\":\"drop\"}]},NaN}\n".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the stream (list answers to calls the guard never saw, under any list's key, events with ids,
    /// multi-line data, comments, CR, LF and CRLF line ends mixed), however it is cut: the guard's output never
    /// holds a tool the caller may not call, and a client reads from it the events it would have read from the
    /// server, each list answer with exactly the entries it may call.
    #[test]
    fn no_stream_cut_anywhere_shows_a_hidden_name(
        events in prop::collection::vec(event(), 0..6),
        endings in prop::collection::vec(prop::sample::select(vec!["\n", "\r\n", "\r"]), 64),
        bom in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        // Each line ends as drawn; a LF right after a CR would merge with it, so a blank line after a CR is CR.
        let mut stream = if bom { "\u{feff}".to_owned() } else { String::new() };
        let mut ending = endings.iter().cycle();
        for event in &events {
            for line in event.lines().chain([""]) {
                let mut end = *ending.next().unwrap();
                if stream.ends_with('\r') && end.starts_with('\n') {
                    end = "\r";
                }
                stream.push_str(line);
                stream.push_str(end);
            }
        }
        let bytes = stream.as_bytes();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut e = EventFilter::new(filter_for(None));
        let mut out = Vec::new();
        let mut from = 0;
        let mut refused = false;
        for to in at.into_iter().chain([bytes.len()]) {
            if e.feed(&bytes[from..to], &mut out).is_err() {
                refused = true;
                break;
            }
            from = to;
        }
        let text = String::from_utf8_lossy(&out);
        for hidden in HIDDEN {
            prop_assert!(!text.contains(hidden), "{} in\n{}", hidden, text);
        }
        let sent = client_events(bytes);
        let read = client_events(&out);
        if refused {
            prop_assert!(read.len() < sent.len());
        } else {
            prop_assert_eq!(read.len(), sent.len(), "{}", text);
        }
        for ((kind, id, data), (sent_kind, sent_id, sent_data)) in read.iter().zip(&sent) {
            prop_assert_eq!(kind, sent_kind);
            prop_assert_eq!(id, sent_id);
            match serde_json::from_str::<Value>(sent_data) {
                Ok(sent_json) => {
                    let json: Value = serde_json::from_str(data).unwrap();
                    prop_assert_eq!(listed(&json), visible(&sent_json));
                }
                Err(_) => prop_assert_eq!(data, sent_data),
            }
        }
    }
}
