//! The reader held to generated messages: whatever a message's framing and however its bytes are cut into reads,
//! [`Wire`] reads back exactly the message that was written, and the one-shot client refuses bytes after it.

use proptest::prelude::*;

use super::*;

/// How a generated body is framed.
#[derive(Clone, Debug)]
enum Framing {
    Length,
    /// Chunked, cut into chunks of these sizes (the rest in one last chunk), with an extension on each size line
    /// and a trailer field when `extras`.
    Chunked {
        sizes: Vec<usize>,
        extras: bool,
    },
    /// Neither: the body runs to EOF (responses only).
    ToEof,
}

fn serialize(start: &str, headers: &[(String, String)], body: &[u8], framing: &Framing) -> Vec<u8> {
    let mut out = format!("{start}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    match framing {
        Framing::Length => out.push_str(&format!("Content-Length: {}\r\n", body.len())),
        Framing::Chunked { .. } => out.push_str("Transfer-Encoding: chunked\r\n"),
        Framing::ToEof => {}
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    match framing {
        Framing::Chunked { sizes, extras } => {
            let mut rest = body;
            for &size in sizes.iter().chain(std::iter::once(&usize::MAX)) {
                let n = size.min(rest.len());
                if n == 0 {
                    continue;
                }
                let ext = if *extras { ";name=value" } else { "" };
                out.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            out.extend_from_slice(b"0\r\n");
            if *extras {
                out.extend_from_slice(b"x-trailer: t\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        _ => out.extend_from_slice(body),
    }
    out
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Length),
        (proptest::collection::vec(1usize..40, 0..5), any::<bool>())
            .prop_map(|(sizes, extras)| Framing::Chunked { sizes, extras }),
        Just(Framing::ToEof),
    ]
}

fn header() -> impl Strategy<Value = (String, String)> {
    // Names that are not framing fields; values without leading or trailing blanks (the reader trims them).
    ("x-[a-z]{1,8}", "[!-~]([ -~]{0,12}[!-~])?")
}

/// Writes `bytes` in pieces cut at `cuts` through a pipe of `capacity` bytes, then closes it; reads with `read`.
async fn through_pipe<T>(
    bytes: Vec<u8>,
    cuts: Vec<usize>,
    capacity: usize,
    read: impl AsyncFnOnce(&mut Wire) -> T,
) -> T {
    let (ours, theirs) = tokio::io::duplex(capacity);
    let writer = tokio::spawn(async move {
        let mut theirs = theirs;
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain(std::iter::once(bytes.len())) {
            if cut > at {
                let _ = theirs.write_all(&bytes[at..cut]).await;
                at = cut;
            }
        }
    });
    let (r, w) = tokio::io::split(ours);
    let mut wire = Wire::over(r, w, Some(WAIT));
    let got = read(&mut wire).await;
    writer.await.unwrap();
    got
}

fn run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #[test]
    fn a_response_reads_back_as_written_however_it_is_cut(
        status in 200u16..600,
        headers in proptest::collection::vec(header(), 0..4),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        framing in framing(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        capacity in 1usize..64,
    ) {
        prop_assume!(!(matches!(status, 204 | 304)) || body.is_empty());
        let bytes = serialize(&format!("HTTP/1.1 {status} Whatever"), &headers, &body, &framing);
        let msg = run(through_pipe(bytes, cuts, capacity, async |w: &mut Wire| w.response(false).await))
            .expect("read the response");
        prop_assert_eq!(msg.status(), status);
        prop_assert_eq!(&msg.body, &body);
        prop_assert_eq!(&msg.headers[..headers.len()], &headers[..]);
    }

    #[test]
    fn a_request_reads_back_as_written_and_the_next_one_after_it(
        headers in proptest::collection::vec(header(), 0..4),
        body in proptest::collection::vec(any::<u8>(), 1..200),
        chunked in any::<bool>(),
        sizes in proptest::collection::vec(1usize..40, 0..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        capacity in 1usize..64,
    ) {
        let framing = if chunked { Framing::Chunked { sizes, extras: true } } else { Framing::Length };
        let mut bytes = serialize("POST /mcp HTTP/1.1", &headers, &body, &framing);
        bytes.extend_from_slice(b"GET /next HTTP/1.1\r\nhost: a\r\n\r\n");
        let (first, second) = run(through_pipe(bytes, cuts, capacity, async |w: &mut Wire| {
            (w.request().await.expect("first"), w.request().await.expect("second"))
        }));
        prop_assert_eq!((first.method(), first.target()), ("POST", "/mcp"));
        prop_assert_eq!(&first.body, &body);
        prop_assert_eq!((second.method(), second.target()), ("GET", "/next"));
        prop_assert!(second.body.is_empty());
    }
}

#[test]
fn heads_and_bodies_without_framing_are_read_as_http_says() {
    let read = |bytes: &[u8], head_request: bool| {
        let bytes = bytes.to_vec();
        run(through_pipe(bytes, vec![], 64, async move |w: &mut Wire| {
            w.response(head_request).await
        }))
    };
    let head = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
    assert!(head.body.is_empty(), "a response to HEAD has no body: {head:?}");
    let no_content = read(b"HTTP/1.1 204 No Content\r\n\r\n", false).unwrap();
    assert!(no_content.body.is_empty());
    let cut = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", false).unwrap_err();
    assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof, "{cut}");
    let bad_chunk = read(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        false,
    )
    .unwrap_err();
    assert!(
        bad_chunk.to_string().contains("bad chunk size line \"zz\""),
        "{bad_chunk}"
    );
}

#[tokio::test]
async fn the_one_shot_client_reads_one_response_and_refuses_bytes_after_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answers: [&[u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
    ];
    let server = tokio::spawn(async move {
        for answer in answers {
            let (s, _) = listener.accept().await.unwrap();
            let mut wire = Wire::new(s, None);
            wire.request().await.unwrap();
            wire.send(answer).await.unwrap();
        }
    });
    let json = get(addr, "/").await.unwrap();
    assert_eq!(
        (json.status, json.header("Content-Type")),
        (200, Some("application/json"))
    );
    assert_eq!(json.json().unwrap()["a"], 1);
    assert_eq!(get(addr, "/").await.unwrap().text(), "abc");
    let smuggled = get(addr, "/").await.unwrap_err().to_string();
    assert!(smuggled.contains("bytes after the response"), "{smuggled}");
    server.await.unwrap();
}

#[test]
fn a_body_that_is_not_json_says_what_it_was() {
    let r = Response {
        status: 200,
        headers: vec![],
        body: b"<html>".to_vec(),
    };
    let e = r.json().unwrap_err();
    assert!(e.to_string().contains("\"<html>\""), "{e}");
}

#[test]
fn responses_reads_every_response_a_connection_carried() {
    let bytes =
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbadHTTP/1.1 200 OK\r\nTransfer-Encoding: \
                  chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    let got: Vec<_> = responses(bytes)
        .unwrap()
        .iter()
        .map(|m| (m.status(), m.text()))
        .collect();
    assert_eq!(got, [(400, "bad".to_string()), (200, "ok".to_string())]);
    assert!(responses(b"").unwrap().is_empty());
    let cut = responses(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").unwrap_err();
    assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof, "{cut}");
}
