//! The request policy: one pure decision per request, for every connection kind (HTTP/1.1 and h2c, either
//! side). Given the request head as hyper parsed it and the live allowlist, [`decide`] either refuses the
//! request or rewrites the head, in place, into exactly the head the upstream is sent. No IO here.
//!
//! Framing belongs to hyper: it decodes the client's body and re-encodes it for the upstream, so no framing field
//! (`Content-Length`, `Transfer-Encoding`) is ever copied from the client. What hyper tolerates but a security
//! proxy must not guess about is refused here, before anything reaches the upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Version};
use mcp_guard_config::{Allowlist, Denial, HeaderSeen, Mode, Reason, RequestFacts, Verdict};

pub mod peek;
pub mod rate;

use crate::upstream::Upstream;

/// Used when neither the config nor a flag sets `maxRequestBodyBytes`.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 4 * 1024 * 1024;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Where the request goes and what the guard knows of the hop it came over.
pub struct Hop<'a> {
    pub upstream: &'a Upstream,
    /// The client's address, as `X-Forwarded-For` gets it.
    pub peer_ip: &'a HeaderValue,
    /// Send the client's (checked) Host and Origin on instead of the upstream's own.
    pub preserve_host: bool,
}

/// What to do with a request.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Send the (rewritten) head upstream; `audited` holds the violation that audit mode lets through.
    Forward {
        audited: Option<Denial>,
    },
    Refuse(Denial),
}

/// Decides on one request. On [`Decision::Forward`] `head` has become the upstream's request head (an absolute
/// URI naming the upstream, or with `preserve_host` the checked client authority); on [`Decision::Refuse`] it
/// is as received.
pub fn decide(head: &mut Parts, allowlist: &Allowlist, hop: &Hop<'_>) -> Decision {
    if let Err(denial) = refuse_ambiguous(head) {
        return Decision::Refuse(denial);
    }
    let audited = match allowlist.check(&facts(head)) {
        Verdict::Allow => None,
        Verdict::Deny(denial) if allowlist.mode == Mode::Enforce => return Decision::Refuse(denial),
        Verdict::Deny(denial) => Some(denial),
    };
    let limit = body_limit(allowlist);
    if let Some(len) = content_length(&head.headers)
        && len > limit
    {
        let denial = Denial::new(Reason::RequestBodyTooLarge, len.to_string())
            .with_detail(format!("limit {limit} bytes"));
        return Decision::Refuse(denial);
    }
    rewrite(head, hop, audited.is_none());
    Decision::Forward { audited }
}

/// The largest request body the allowlist's limits let through.
pub fn body_limit(allowlist: &Allowlist) -> u64 {
    allowlist
        .limits
        .max_request_body_bytes
        .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES)
}

/// The facts the allowlist check reads from a request head.
pub fn facts(head: &Parts) -> RequestFacts<'_> {
    RequestFacts {
        target_authority: head.uri.authority().map(Authority::as_str),
        http2: head.version == Version::HTTP_2,
        scheme: head.uri.scheme_str(),
        host: HeaderSeen::collect(
            head.headers
                .get_all(header::HOST)
                .iter()
                .map(HeaderValue::as_bytes),
        ),
        origin: HeaderSeen::collect(
            head.headers
                .get_all(header::ORIGIN)
                .iter()
                .map(HeaderValue::as_bytes),
        ),
    }
}

fn malformed(received: impl Into<String>, detail: &str) -> Denial {
    Denial::new(Reason::MalformedRequest, received).with_detail(detail)
}

/// Refuses the request shapes where two parsers may disagree (request smuggling) and targets the guard does not
/// proxy. hyper already refuses some of them itself (with its plain `400`); this holds whatever it lets through.
fn refuse_ambiguous(head: &Parts) -> Result<(), Denial> {
    // RFC 9110 §9.3.6: CONNECT asks for a tunnel, which would carry bytes the guard never parses.
    if head.method == Method::CONNECT {
        return Err(malformed("CONNECT", "CONNECT (a tunnel) is not proxied"));
    }
    match head.uri.scheme() {
        None if head.uri.path().starts_with('/') => {}
        None => {
            // RFC 9112 §3.2.4: the asterisk-form has no path to forward it to.
            return Err(malformed(
                head.uri.to_string(),
                "request target: asterisk-form is not proxied",
            ));
        }
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => {}
        Some(_) => {
            return Err(malformed(
                head.uri.to_string(),
                "request target: only http:// and https:// absolute targets are proxied",
            ));
        }
    }
    let codings = head.headers.get_all(header::TRANSFER_ENCODING);
    if codings.iter().next().is_some() {
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings; a 1.0 hop in between would read the body differently.
        if head.version < Version::HTTP_11 {
            return Err(malformed(
                "transfer-encoding",
                "transfer-encoding in an HTTP/1.0 request",
            ));
        }
        // RFC 9112 §6.3: a body framed two ways is the classic smuggling shape (CL.TE, TE.CL).
        if head.headers.contains_key(header::CONTENT_LENGTH) {
            return Err(malformed(
                "transfer-encoding",
                "both content-length and transfer-encoding",
            ));
        }
        // Only a single `chunked`: other codings, lists and repeated fields are where parsers differ.
        let mut tokens = codings
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii);
        let single_chunked = tokens.next().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
            && tokens.next().is_none()
            && codings.iter().count() == 1;
        if !single_chunked {
            let received = codings
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(malformed(
                received,
                "transfer-encoding other than a single chunked",
            ));
        }
    }
    let mut lengths = head.headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let n = parse_content_length(first.as_bytes()).ok_or_else(|| {
            malformed(
                String::from_utf8_lossy(first.as_bytes()),
                "invalid content-length",
            )
        })?;
        for other in lengths {
            if parse_content_length(other.as_bytes()) != Some(n) {
                return Err(malformed(
                    String::from_utf8_lossy(other.as_bytes()),
                    "conflicting content-length values",
                ));
            }
        }
    }
    Ok(())
}

/// RFC 9110 §8.6: one or more digits, nothing else.
fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter()
        .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    parse_content_length(headers.get(header::CONTENT_LENGTH)?.as_bytes())
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) and the framing fields the library sets for the next hop.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Fields the guard decides on itself (sets, rewrites or drops): a client can neither pass its own on nor have
/// the guard's removed by naming them in `Connection`.
fn is_set_by_guard(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::ORIGIN
        || name == header::CONTENT_LENGTH
        || name == header::FORWARDED
        || name == header::EXPECT
        || name.as_str().starts_with("x-forwarded-")
        || name.as_str() == "x-original-host"
}

/// Rewrites the client's head into the upstream's.
fn rewrite(head: &mut Parts, hop: &Hop<'_>, allowed: bool) {
    let upstream = hop.upstream;
    // The authority the client addressed: what the check looked at.
    let client_authority = match head.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => head.headers.get(header::HOST).cloned(),
    };
    let preserved = client_authority.as_ref().filter(|_| hop.preserve_host && allowed);

    // HTTP/1.1 upstreams get origin-form; h2c ones an absolute URI (`:scheme`, `:authority`, `:path`). The
    // connection goes to the upstream whatever authority the URI names.
    let path = match head.uri.path_and_query() {
        Some(p) if p.as_str().starts_with('/') => p.clone(),
        // `http://h?x=1`: the path is empty, the query is not.
        Some(p) => PathAndQuery::try_from(format!("/{}", p.as_str()))
            .unwrap_or_else(|_| PathAndQuery::from_static("/")),
        None => PathAndQuery::from_static("/"),
    };
    let mut uri = http::uri::Parts::default();
    if upstream.h2 {
        let authority = preserved
            .and_then(|a| Authority::try_from(a.as_bytes()).ok())
            .unwrap_or_else(|| upstream.authority.clone());
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority);
    }
    uri.path_and_query = Some(path);
    head.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    head.version = if upstream.h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };

    // hyper decoded a chunked body; re-encoded, it is chunked again. Said explicitly, because hyper's client
    // would otherwise send a body of unknown length on a GET as no body at all.
    let chunked = head.headers.contains_key(header::TRANSFER_ENCODING);
    strip(&mut head.headers);
    let headers = &mut head.headers;
    if chunked && !upstream.h2 {
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    if !upstream.h2 {
        // h2 carries the authority in the URI (`:authority`).
        let host = preserved.cloned().unwrap_or_else(|| upstream.host_header.clone());
        headers.insert(header::HOST, host);
    }
    if allowed && !hop.preserve_host && headers.contains_key(header::ORIGIN) {
        // The client's Origin passed the check; the server's own localhost check sees its own origin.
        headers.insert(header::ORIGIN, upstream.origin_header.clone());
    }
    headers.insert(X_FORWARDED_FOR.clone(), hop.peer_ip.clone());
    if let Some(client) = client_authority {
        headers.insert(X_FORWARDED_HOST.clone(), client);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
}

/// Removes hop-by-hop fields, the fields `Connection` names (but never one the guard decides on), framing
/// fields and the client's own forwarding fields. Origin stays: [`rewrite`] decides on it.
fn strip(headers: &mut HeaderMap) {
    // Every request has these; removing them by name saves collecting them.
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let mut remove: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if is_hop_by_hop(name) || (is_set_by_guard(name) && *name != header::ORIGIN) {
            remove.push(name.clone());
        }
    }
    remove.extend(connection_named(headers).filter(|n| !is_set_by_guard(n)));
    for name in remove {
        headers.remove(&name);
    }
}

/// Removes the hop-by-hop fields of an upstream response (and those its `Connection` names) before hyper frames
/// it again for the client. `Content-Length` stays: it is the length of the body hyper read (and for `HEAD`, of
/// the body a `GET` would have had).
pub fn strip_response(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let mut remove: Vec<HeaderName> = connection_named(headers)
        .filter(|n| *n != header::CONTENT_LENGTH)
        .collect();
    remove.extend(headers.keys().filter(|k| is_hop_by_hop(k)).cloned());
    for name in remove {
        headers.remove(&name);
    }
}

/// The field names a `Connection` header lists (RFC 9110 §7.6.1).
fn connection_named(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
}

#[cfg(test)]
mod tests;
