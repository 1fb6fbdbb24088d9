//! CORS for browser-based MCP clients, answered from the Origin allowlist (off unless the config's `cors` or
//! `--cors` turns it on). The guard answers a preflight itself once the origin passed the allowlist; a preflight
//! from any other origin is refused like any request from it. An origin is echoed, never `*`, and only an origin
//! the allowlist let through (never one that audit mode forwarded despite a violation).

use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

/// The methods of Streamable HTTP (and the SSE transport): `GET` streams, `POST` calls, `DELETE` ends a session.
pub const ALLOW_METHODS: &str = "GET, POST, DELETE";
/// The request fields an MCP client sends that are not CORS-safelisted; `Mcp-Param-*` (SEP-2243) come on top as
/// the preflight names them.
pub const ALLOW_HEADERS: [&str; 7] = [
    "content-type",
    "authorization",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];
/// The response fields a page may read beyond the safelisted ones: the session to send back, and what to
/// authenticate with.
pub const EXPOSE_HEADERS: &str = "WWW-Authenticate, Mcp-Session-Id";
/// How long a browser may keep a preflight's answer (seconds); Chromium caps it at two hours.
pub const MAX_AGE_SECS: u32 = 600;
/// The prefix of SEP-2243's per-parameter headers.
const MCP_PARAM: &str = "mcp-param-";

/// A CORS preflight: `OPTIONS` with an `Origin` and the method the page wants to send
/// (`Access-Control-Request-Method`).
pub fn is_preflight(head: &Parts) -> bool {
    head.method == Method::OPTIONS
        && head.headers.contains_key(header::ORIGIN)
        && head.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The fields of the guard's answer (`204`) to a preflight from `origin`, an origin the allowlist let through:
/// the methods, the request fields of [`ALLOW_HEADERS`] and the `Mcp-Param-*` fields the preflight asks for
/// (any other field it asks for is not allowed, so the browser does not send the request).
pub fn preflight_fields(origin: &HeaderValue, request: &HeaderMap) -> HeaderMap {
    let mut allowed: Vec<String> = ALLOW_HEADERS.iter().map(|h| (*h).to_owned()).collect();
    let asked = request
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .flat_map(super::list_items)
        .filter_map(|name| HeaderName::from_bytes(name).ok());
    for name in asked {
        let name = name.as_str();
        if name.starts_with(MCP_PARAM) && name.len() > MCP_PARAM.len() && !allowed.iter().any(|a| a == name) {
            allowed.push(name.to_owned());
        }
    }
    let mut fields = HeaderMap::new();
    fields.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    fields.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    if let Ok(v) = HeaderValue::try_from(allowed.join(", ")) {
        fields.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    fields.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECS));
    fields.insert(
        header::VARY,
        HeaderValue::from_static("Origin, Access-Control-Request-Headers"),
    );
    fields
}

/// Adds the CORS fields of an actual response to `origin` (the upstream's own `Access-Control-*` fields give
/// way: the allowlist decides who may read).
pub fn add_response_fields(origin: &HeaderValue, response: &mut HeaderMap) {
    response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    response.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    response.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
    response.append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preflight(fields: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method("OPTIONS").uri("/mcp");
        for (n, v) in fields {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_preflight_is_an_options_with_origin_and_request_method() {
        let origin = ("origin", "https://app.example.com");
        let method = ("access-control-request-method", "POST");
        assert!(is_preflight(&preflight(&[origin, method])));
        assert!(!is_preflight(&preflight(&[origin])));
        assert!(!is_preflight(&preflight(&[method])));
    }

    #[test]
    fn the_answer_names_the_origin_and_the_mcp_fields_asked_for() {
        let origin = HeaderValue::from_static("https://app.example.com");
        let head = preflight(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,mcp-protocol-version, Mcp-Param-Region ,x-other,mcp-param-",
            ),
        ]);
        let f = preflight_fields(&origin, &head.headers);
        assert_eq!(f["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(f["access-control-allow-methods"], "GET, POST, DELETE");
        assert_eq!(f["access-control-max-age"], "600");
        assert!(f["vary"].to_str().unwrap().contains("Origin"));
        let allowed: Vec<&str> = f["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .split(", ")
            .collect();
        for h in ALLOW_HEADERS.iter().chain(&["mcp-param-region"]) {
            assert!(allowed.contains(h), "{h} in {allowed:?}");
        }
        assert!(!allowed.contains(&"x-other"), "only MCP's fields: {allowed:?}");
        assert!(!allowed.contains(&"mcp-param-"), "{allowed:?}");
    }

    #[test]
    fn responses_carry_the_origin_never_a_wildcard_or_credentials() {
        let origin = HeaderValue::from_static("https://app.example.com");
        let mut h = HeaderMap::new();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
        h.insert("vary", HeaderValue::from_static("Accept"));
        add_response_fields(&origin, &mut h);
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-expose-headers"], EXPOSE_HEADERS);
        assert!(h.get("access-control-allow-credentials").is_none());
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept", "Origin"]);
    }
}
