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

fn call<'a>(method: &'a str, tool: Option<&'a str>) -> RequestClass<'a> {
    RequestClass {
        stream: false,
        method: Some(method),
        tool,
    }
}

const PLAIN: RequestClass<'static> = RequestClass {
    stream: false,
    method: None,
    tool: None,
};

const STREAM: RequestClass<'static> = RequestClass {
    stream: true,
    method: None,
    tool: None,
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
fn an_unreadable_method_or_tool_pays_the_strictest_limit() {
    let limits = Limits {
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
    let unknown = RequestClass {
        stream: false,
        method: Some(UNKNOWN_METHOD),
        tool: None,
    };
    assert_eq!(request(&mut t, a, &unknown, &limits, now), None);
    let r = request(&mut t, a, &unknown, &limits, now).unwrap();
    assert!(r.detail.contains("6/min, burst 1"), "{r:?}");
    // A tools/call without a readable tool name: the strictest tool limit.
    assert_eq!(request(&mut t, a, &call("tools/call", None), &limits, now), None);
    let r = request(&mut t, a, &call("tools/call", None), &limits, now).unwrap();
    assert!(r.detail.contains("strictest perTool"), "{r:?}");
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
