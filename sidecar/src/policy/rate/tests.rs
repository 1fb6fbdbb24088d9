use super::*;

const SEC: Duration = Duration::from_secs(1);

fn rate(requests_per_minute: u32, burst: u32) -> Rate {
    Rate {
        requests_per_minute,
        burst: Some(burst),
    }
}

fn client(s: &str) -> ClientKey {
    ClientKey::of(s.parse().unwrap())
}

/// A request of one call; leaked, which a test can afford, so that it can be passed around like a constant.
fn call(method: &'static str, tool: Option<&'static str>) -> RequestClass<'static> {
    calls(vec![Call::method(method, tool)])
}

fn calls(calls: Vec<Call<'static>>) -> RequestClass<'static> {
    RequestClass {
        stream: false,
        calls: Vec::leak(calls),
    }
}

const PLAIN: RequestClass<'static> = RequestClass {
    stream: false,
    calls: &[],
};

const STREAM: RequestClass<'static> = RequestClass {
    stream: true,
    calls: &[],
};

/// Admits and releases at once (a request that finished), returning the refusal if any.
fn request(
    t: &mut ClientTable,
    c: ClientKey,
    class: &RequestClass<'_>,
    l: &Limits,
    now: Duration,
) -> Option<Refusal> {
    match t.admit(c, class, l, now) {
        Ok(slot) => {
            t.release(slot);
            None
        }
        Err(r) => Some(r),
    }
}

#[test]
fn a_bucket_allows_its_burst_then_one_request_per_interval() {
    // 60/min = one a second, burst 3.
    let limits = Limits {
        per_client: Some(rate(60, 3)),
        ..Limits::default()
    };
    let (mut t, a) = (ClientTable::default(), client("10.0.0.1"));
    let at = |ms: u64| Duration::from_millis(ms);
    for _ in 0..3 {
        assert_eq!(request(&mut t, a, &PLAIN, &limits, at(0)), None);
    }
    let refused = request(&mut t, a, &PLAIN, &limits, at(0)).unwrap();
    assert_eq!(refused.reason, Reason::RateLimited);
    assert_eq!(refused.retry_after, SEC);
    assert_eq!(refused.retry_after_secs(), 1);
    assert_eq!(refused.detail, "perClient: 60/min, burst 3");
    // 400 ms later the next token is 600 ms away; a refusal costs nothing, so it is still 600 ms.
    let refused = request(&mut t, a, &PLAIN, &limits, at(400)).unwrap();
    assert_eq!(refused.retry_after, at(600));
    assert_eq!(refused.retry_after_secs(), 1, "rounded up");
    assert_eq!(
        request(&mut t, a, &PLAIN, &limits, at(1000)),
        None,
        "after Retry-After"
    );
    assert!(request(&mut t, a, &PLAIN, &limits, at(1000)).is_some());
    // A quiet spell refills the burst, and no more.
    for _ in 0..3 {
        assert_eq!(request(&mut t, a, &PLAIN, &limits, at(60_000)), None);
    }
    assert!(request(&mut t, a, &PLAIN, &limits, at(60_000)).is_some());
}

#[test]
fn clients_have_buckets_of_their_own_and_ipv6_clients_are_their_64() {
    let limits = Limits {
        per_client: Some(rate(1, 1)),
        ..Limits::default()
    };
    let mut t = ClientTable::default();
    let now = Duration::ZERO;
    assert_eq!(request(&mut t, client("10.0.0.1"), &PLAIN, &limits, now), None);
    assert!(request(&mut t, client("10.0.0.1"), &PLAIN, &limits, now).is_some());
    assert!(
        request(&mut t, client("::ffff:10.0.0.1"), &PLAIN, &limits, now).is_some(),
        "v4-mapped is v4"
    );
    assert_eq!(request(&mut t, client("10.0.0.2"), &PLAIN, &limits, now), None);
    assert_eq!(
        request(&mut t, client("2001:db8:0:1::1"), &PLAIN, &limits, now),
        None
    );
    assert!(
        request(&mut t, client("2001:db8:0:1:ffff::9"), &PLAIN, &limits, now).is_some(),
        "same /64"
    );
    assert_eq!(
        request(&mut t, client("2001:db8:0:2::1"), &PLAIN, &limits, now),
        None
    );
    assert_eq!(client("2001:db8:0:1::1").to_string(), "2001:db8:0:1::/64");
    // 1/min: the wait is the rest of the minute.
    let r = request(
        &mut t,
        client("10.0.0.1"),
        &PLAIN,
        &limits,
        Duration::from_secs(15),
    )
    .unwrap();
    assert_eq!(r.retry_after_secs(), 45);
}

#[test]
fn method_and_tool_buckets_are_charged_only_where_configured() {
    let limits = Limits {
        per_client: Some(rate(600, 100)),
        per_method: [
            ("tools/call".to_owned(), rate(60, 2)),
            ("tools/list".to_owned(), rate(60, 1)),
        ]
        .into(),
        per_tool: [("render".to_owned(), rate(60, 1))].into(),
        ..Limits::default()
    };
    let (mut t, a, now) = (ClientTable::default(), client("10.0.0.1"), Duration::ZERO);
    // The tool bucket (burst 1) refuses the second render; the method bucket (burst 2) is then still one short.
    assert_eq!(
        request(&mut t, a, &call("tools/call", Some("render")), &limits, now),
        None
    );
    let r = request(&mut t, a, &call("tools/call", Some("render")), &limits, now).unwrap();
    assert_eq!(
        (r.reason, r.detail.as_str()),
        (Reason::RateLimited, "perTool[\"render\"]: 60/min, burst 1")
    );
    // Another tool is limited only by tools/call's bucket, which the refused render did not drain.
    assert_eq!(
        request(&mut t, a, &call("tools/call", Some("search")), &limits, now),
        None
    );
    let r = request(&mut t, a, &call("tools/call", Some("search")), &limits, now).unwrap();
    assert_eq!(r.detail, "perMethod[\"tools/call\"]: 60/min, burst 2");
    // Other methods: their own bucket or none; a tool name on another method is not a tool.
    assert_eq!(request(&mut t, a, &call("tools/list", None), &limits, now), None);
    assert!(request(&mut t, a, &call("tools/list", None), &limits, now).is_some());
    for _ in 0..5 {
        assert_eq!(
            request(&mut t, a, &call("ping", Some("render")), &limits, now),
            None
        );
    }
}

#[test]
fn the_longest_wait_of_the_buckets_refusing_is_the_retry_after() {
    let limits = Limits {
        per_client: Some(rate(60, 1)),
        per_method: [("tools/call".to_owned(), rate(6, 1))].into(),
        ..Limits::default()
    };
    let (mut t, a) = (ClientTable::default(), client("10.0.0.1"));
    assert_eq!(
        request(&mut t, a, &call("tools/call", None), &limits, Duration::ZERO),
        None
    );
    let r = request(&mut t, a, &call("tools/call", None), &limits, Duration::ZERO).unwrap();
    assert_eq!(r.retry_after_secs(), 10, "{r:?}");
}

#[test]
fn an_unreadable_call_is_charged_to_every_bucket_it_could_belong_to() {
    let limits = Limits {
        per_client: Some(rate(600, 100)),
        per_method: [
            ("tools/call".to_owned(), rate(600, 10)),
            ("ping".to_owned(), rate(60, 5)),
        ]
        .into(),
        per_tool: [
            ("cheap".to_owned(), rate(600, 10)),
            ("costly".to_owned(), rate(6, 1)),
        ]
        .into(),
        ..Limits::default()
    };
    let (mut t, a, now) = (ClientTable::default(), client("10.0.0.1"), Duration::ZERO);
    let unknown = calls(vec![Call::Unreadable]);
    assert_eq!(request(&mut t, a, &unknown, &limits, now), None);
    // It took costly's only token: neither another unreadable call nor a readable costly one gets through, so
    // each unreadable form costs what the call it hides costs, never a bucket of its own.
    let r = request(&mut t, a, &unknown, &limits, now).unwrap();
    assert_eq!(r.detail, "perTool[\"costly\"]: 6/min, burst 1");
    assert!(request(&mut t, a, &call("tools/call", Some("costly")), &limits, now).is_some());
    assert!(request(&mut t, a, &call("tools/call", None), &limits, now).is_some());
    // And it was charged to ping's bucket too: four pings left of five.
    for _ in 0..4 {
        assert_eq!(request(&mut t, a, &call("ping", None), &limits, now), None);
    }
    assert!(request(&mut t, a, &call("ping", None), &limits, now).is_some());
    // A tools/call without a readable tool name: every tool limit.
    let b = client("10.0.0.2");
    assert_eq!(request(&mut t, b, &call("tools/call", None), &limits, now), None);
    let r = request(&mut t, b, &call("tools/call", Some("costly")), &limits, now).unwrap();
    assert!(r.detail.contains("perTool[\"costly\"]"), "{r:?}");
    assert_eq!(
        request(&mut t, b, &call("tools/call", Some("cheap")), &limits, now),
        None
    );
}

#[test]
fn a_batch_is_charged_call_by_call_and_one_larger_than_a_burst_never_fits() {
    let limits = Limits {
        per_client: Some(rate(600, 20)),
        per_tool: [("render".to_owned(), rate(6, 3))].into(),
        ..Limits::default()
    };
    let (mut t, a, now) = (ClientTable::default(), client("10.0.0.1"), Duration::ZERO);
    let renders = |n: usize| calls(vec![Call::method("tools/call", Some("render")); n]);
    assert_eq!(request(&mut t, a, &renders(2), &limits, now), None);
    let r = request(&mut t, a, &renders(2), &limits, now).unwrap();
    assert_eq!(
        r.detail,
        "perTool[\"render\"]: 6/min, burst 3 (this request carries 2 calls for it)"
    );
    assert_eq!(r.retry_after_secs(), 10, "one more token");
    assert_eq!(request(&mut t, a, &renders(1), &limits, now), None);
    let b = client("10.0.0.2");
    let r = request(&mut t, b, &renders(4), &limits, now).unwrap();
    assert!(
        r.detail
            .ends_with("(this request carries 4 calls for it: more than the burst never fits)"),
        "{r:?}"
    );
    // perClient counts calls too, and a request without any one.
    let c = client("10.0.0.3");
    let pings = calls(vec![Call::method("ping", None); 20]);
    assert_eq!(request(&mut t, c, &pings, &limits, now), None);
    assert!(request(&mut t, c, &PLAIN, &limits, now).is_some());
}

#[test]
fn caps_count_open_requests_and_streams_apart() {
    let limits = Limits {
        max_concurrent_requests_per_client: Some(2),
        max_streams_per_client: Some(1),
        ..Limits::default()
    };
    let (mut t, a, now) = (ClientTable::default(), client("10.0.0.1"), Duration::ZERO);
    let first = t.admit(a, &PLAIN, &limits, now).unwrap();
    let _second = t.admit(a, &PLAIN, &limits, now).unwrap();
    let r = t.admit(a, &PLAIN, &limits, now).unwrap_err();
    assert_eq!(r.reason, Reason::TooManyConcurrentRequests);
    assert_eq!(r.retry_after_secs(), 1);
    // Streams are counted apart: two requests in flight do not stop a stream.
    let stream = t.admit(a, &STREAM, &limits, now).unwrap();
    assert_eq!(
        t.admit(a, &STREAM, &limits, now).unwrap_err().reason,
        Reason::TooManyStreams
    );
    assert!(
        t.admit(client("10.0.0.2"), &STREAM, &limits, now).is_ok(),
        "another client's streams"
    );
    t.release(stream);
    assert!(
        t.admit(a, &STREAM, &limits, now).is_ok(),
        "a closed stream frees its slot"
    );
    t.release(first);
    assert!(
        t.admit(a, &PLAIN, &limits, now).is_ok(),
        "a finished request frees its slot"
    );
}

#[test]
fn audit_holds_count_past_the_cap() {
    let limits = Limits {
        max_concurrent_requests_per_client: Some(1),
        ..Limits::default()
    };
    let (mut t, a, now) = (ClientTable::default(), client("10.0.0.1"), Duration::ZERO);
    let s1 = t.admit(a, &PLAIN, &limits, now).unwrap();
    assert!(t.admit(a, &PLAIN, &limits, now).is_err());
    let s2 = t.hold(a, false);
    t.release(s1);
    assert!(
        t.admit(a, &PLAIN, &limits, now).is_err(),
        "the audited request still counts"
    );
    t.release(s2);
    assert!(t.admit(a, &PLAIN, &limits, now).is_ok());
}

#[test]
fn the_table_forgets_idle_clients_first_and_never_one_with_a_request_open() {
    let limits = Limits {
        per_client: Some(rate(60, 1)),
        max_tracked_clients: Some(32),
        ..Limits::default()
    };
    let mut t = ClientTable::default();
    let c = |i: u32| ClientKey::of(std::net::Ipv4Addr::from(0x0a00_0000 + i).into());
    // 32 clients, each with a request open: a 33rd is refused, not let in unlimited.
    let slots: Vec<Slot> = (0..32)
        .map(|i| t.admit(c(i), &PLAIN, &limits, Duration::ZERO).unwrap())
        .collect();
    let r = t.admit(c(99), &PLAIN, &limits, Duration::ZERO).unwrap_err();
    assert_eq!(r.reason, Reason::RateLimited);
    assert!(r.detail.contains("maxTrackedClients: 32"), "{r:?}");
    assert_eq!(t.len(), 32);
    // Audit mode lets it through, still without growing the table.
    let untracked = t.hold(c(99), false);
    assert_eq!(t.len(), 32);
    t.release(untracked);
    for s in slots {
        t.release(s);
    }
    // A minute on, every bucket is full again: forgetting them changes nothing, and all go in one sweep.
    assert!(t.admit(c(99), &PLAIN, &limits, 60 * SEC).is_ok());
    assert_eq!(t.len(), 1);
    // Clients with empty buckets are forgotten oldest first when they must be: the table stays bounded.
    for i in 0..100 {
        let _ = request(
            &mut t,
            c(100 + i),
            &PLAIN,
            &limits,
            61 * SEC + Duration::from_millis(u64::from(i)),
        );
        assert!(t.len() <= 32, "{}", t.len());
    }
    let newest = c(199);
    assert!(
        request(&mut t, newest, &PLAIN, &limits, 62 * SEC).is_some(),
        "the most recent client is remembered"
    );
}

#[test]
fn a_request_whose_response_is_an_event_stream_becomes_a_stream_within_the_cap() {
    let limits = Limits {
        max_concurrent_requests_per_client: Some(5),
        max_streams_per_client: Some(1),
        ..Limits::default()
    };
    let (mut t, a, now) = (ClientTable::default(), client("10.0.0.1"), Duration::ZERO);
    let mut first = t.admit(a, &PLAIN, &limits, now).unwrap();
    assert_eq!(t.become_stream(&mut first, &limits), Ok(()));
    assert!(first.stream);
    // The cap is full now, for streams admitted as such and for those found out by their response.
    assert_eq!(
        t.admit(a, &STREAM, &limits, now).unwrap_err().reason,
        Reason::TooManyStreams
    );
    let mut second = t.admit(a, &PLAIN, &limits, now).unwrap();
    let r = t.become_stream(&mut second, &limits).unwrap_err();
    assert_eq!(
        (r.reason, r.detail.as_str()),
        (Reason::TooManyStreams, "maxStreamsPerClient: 1 open")
    );
    assert!(!second.stream, "refused, it is still the request it was");
    // Releasing each as what it is now leaves nothing behind.
    t.release(second);
    t.release(first);
    assert!(t.clients[&a].idle(0), "{:?}", t.clients[&a]);
    // Audit mode moves it past the cap, and it counts.
    let mut s1 = t.admit(a, &STREAM, &limits, now).unwrap();
    let mut s2 = t.admit(a, &PLAIN, &limits, now).unwrap();
    t.move_to_streams(&mut s2);
    assert_eq!(t.clients[&a].streams, 2);
    assert_eq!(t.become_stream(&mut s1, &limits), Ok(()), "already a stream");
    t.release(s1);
    t.release(s2);
    assert!(t.clients[&a].idle(0));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Generated bodies (key order, duplicates, escapes, case, padding, batches), arriving in generated pieces
    /// and read as the proxy reads them (a prefix until the scanner has enough, the rest watched): every bucket
    /// is charged at least one token for each call the server runs on it, the server being serde_json (last
    /// key wins) over the whole body, one call per batch element. A refused or cut body runs nothing.
    #[test]
    fn tokens_taken_are_never_fewer_than_the_calls_the_server_runs(
        body in crate::policy::peek::tests::body(),
        cuts in proptest::collection::vec(1usize..3_000, 0..8),
    ) {
        use crate::policy::{self, peek};
        let limits = Limits {
            per_client: Some(rate(600, 100)),
            per_method: [("tools/call".to_owned(), rate(60, 10)), ("ping".to_owned(), rate(60, 10))].into(),
            per_tool: [("render".to_owned(), rate(6, 1)), ("cheap".to_owned(), rate(600, 10))].into(),
            ..Limits::default()
        };
        let bytes = body.as_bytes();
        let mut frames = Vec::new();
        let mut at = 0;
        for c in &cuts {
            let end = (at + c).min(bytes.len());
            frames.push(&bytes[at..end]);
            at = end;
        }
        frames.push(&bytes[at..]);
        // crate::body::peek: a frame at a time while under the limit, until the scanner has enough.
        let (mut scanner, mut fed, mut read) = (peek::Scanner::default(), 0, 0);
        let mut ended = false;
        while fed < peek::PEEK_LIMIT {
            let Some(frame) = frames.get(read) else {
                ended = true;
                break;
            };
            scanner.feed(frame);
            fed += frame.len();
            read += 1;
            if !scanner.peeked().wants_more() {
                break;
            }
        }
        let peeked = (!(ended && bytes[..fed].trim_ascii().is_empty())).then(|| scanner.peeked());
        let head = http::Request::post("/mcp").body(()).unwrap().into_parts().0;
        let Ok(calls) = policy::mcp_calls(&head, peeked) else {
            return Ok(()); // refused: nothing reaches the server
        };
        let class = RequestClass { stream: false, calls: &calls };
        let tokens = |bucket: Bucket<'_>| {
            charges(&class, &limits).iter().find(|c| c.bucket == bucket).map_or(0, |c| c.tokens) as usize
        };
        if !ended && let Some(mut watch) = policy::watch(&scanner, &calls)
            && frames[read..].iter().any(|f| watch.feed(f).is_err())
        {
            return Ok(()); // cut: the server never gets a whole body
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            return Ok(()); // the server runs nothing
        };
        let run: Vec<(&str, Option<&str>)> = match v.as_array() {
            Some(batch) => batch.iter().collect(),
            None => vec![&v],
        }
        .into_iter()
        .filter_map(|m| Some((m.get("method")?.as_str()?, m["params"]["name"].as_str())))
        .collect();
        proptest::prop_assert!(tokens(Bucket::Client) >= run.len().max(1), "{calls:?} vs {run:?}");
        for m in ["tools/call", "ping"] {
            let n = run.iter().filter(|(method, _)| *method == m).count();
            proptest::prop_assert!(tokens(Bucket::Method(m)) >= n, "{m}: {calls:?} vs {run:?}");
        }
        for t in ["render", "cheap"] {
            let n = run.iter().filter(|c| **c == ("tools/call", Some(t))).count();
            proptest::prop_assert!(tokens(Bucket::Tool(t)) >= n, "{t}: {calls:?} vs {run:?}");
        }
    }
}
