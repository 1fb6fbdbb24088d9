//! How every answer the guard gives itself looks on the wire. A refusal: the reason's HTTP status, a JSON-RPC
//! error body with its code, the hint, `Retry-After` for the limits, and `connection: close` where the client's
//! bytes cannot be trusted to frame a next request; nothing else builds a refusal. And the `204` to a CORS
//! preflight.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use mcp_guard_config::{Allowlist, Denial, Reason};

use crate::body::ResponseBody;

/// JSON-RPC 2.0: the request is not an acceptable request (the guard's own refusals of the request as a whole).
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC 2.0: an internal error (here: the MCP server behind the guard could not be reached).
pub const INTERNAL_ERROR: i32 = -32603;
/// MCP 2026-07-28's `HeaderMismatch`: an `Mcp-Method` / `Mcp-Name` header disagrees with the body.
pub const HEADER_MISMATCH: i32 = -32020;
/// The guard's code for "too many requests" (a rate limit, the cap on requests in flight or on open streams),
/// in the implementation-defined range MCP 2026-07-28 leaves to servers (−32000…−32019; −32020…−32099 are the
/// specification's). Clear of −32000 and −32001, which the MCP SDKs use for a closed connection and a timeout.
pub const TOO_MANY_REQUESTS: i32 = -32010;
/// The guard's code for "who are you": no token, or one it does not accept (`401`). Ours, as above.
pub const UNAUTHORIZED: i32 = -32011;
/// The guard's code for "not you, not this": a token without the scopes the call needs, an identity the config
/// does not allow, a host without a resource URI (`403`). Ours, as above.
pub const FORBIDDEN: i32 = -32012;

/// The JSON-RPC error code a refusal carries.
pub fn code(reason: Reason) -> i32 {
    match reason {
        Reason::UpstreamUnavailable | Reason::AuthKeysUnavailable | Reason::ListNotFiltered => INTERNAL_ERROR,
        Reason::Unauthenticated
        | Reason::InvalidToken
        | Reason::TokenExpired
        | Reason::TokenNotYetValid
        | Reason::TokenAudienceMismatch => UNAUTHORIZED,
        Reason::InsufficientScope
        | Reason::IdentityNotAllowed
        | Reason::NoResourceForHost
        | Reason::ToolNotAllowed
        | Reason::MethodNotAllowed => FORBIDDEN,
        Reason::RateLimited | Reason::TooManyConcurrentRequests | Reason::TooManyStreams => TOO_MANY_REQUESTS,
        Reason::McpHeaderMismatch => HEADER_MISMATCH,
        Reason::HostNotAllowed
        | Reason::OriginNotAllowed
        | Reason::MalformedHost
        | Reason::MissingHost
        | Reason::MalformedOrigin
        | Reason::MultipleHostHeaders
        | Reason::MultipleOriginHeaders
        | Reason::RequestBodyTooLarge
        | Reason::MalformedRequest
        | Reason::RequestHeadersTooLarge
        | Reason::UncountableBody
        | Reason::InvalidAuthRequest => INVALID_REQUEST,
    }
}

#[derive(serde::Serialize)]
struct ErrorEnvelope<'a> {
    jsonrpc: &'static str,
    id: Option<()>,
    error: ErrorObject<'a>,
}

#[derive(serde::Serialize)]
struct ErrorObject<'a> {
    code: i32,
    message: &'static str,
    data: ErrorData<'a>,
}

#[derive(serde::Serialize)]
struct ErrorData<'a> {
    reason: &'static str,
    received: &'a str,
    hint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// The JSON-RPC error body the guard answers refusals with:
/// `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":..,"data":{"reason":..,"received":..,"hint":..}}}`.
pub fn error_body(allowlist: &Allowlist, denial: &Denial) -> Bytes {
    let envelope = ErrorEnvelope {
        jsonrpc: "2.0",
        id: None,
        error: ErrorObject {
            code: code(denial.reason),
            message: denial.reason.message(),
            data: ErrorData {
                reason: denial.reason.as_str(),
                received: &denial.received,
                hint: allowlist.hint(denial),
                detail: denial.detail.as_deref(),
            },
        },
    };
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// Whether a refusal leaves bytes on the connection nobody should read on as a request (its framing, body or size
/// was refused): the connection closes after the answer.
pub fn closes_connection(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::MalformedRequest | Reason::RequestBodyTooLarge | Reason::UncountableBody
    )
}

/// The answer to a refused request: the reason's status, the JSON-RPC body, `connection: close` when the rest of
/// the connection cannot be trusted, and `Retry-After` (whole seconds) when the limits say when to come back.
pub fn render(
    allowlist: &Allowlist,
    denial: &Denial,
    retry_after_secs: Option<u64>,
) -> Response<ResponseBody> {
    let mut answer = json_response(denial.status(), error_body(allowlist, denial));
    let headers = answer.headers_mut();
    if closes_connection(denial.reason) {
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(secs) = retry_after_secs {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    answer
}

/// The answer to a request the authentication or the scopes refused: [`render`], plus the `WWW-Authenticate`
/// challenge that tells the client where the resource metadata is and what went wrong (RFC 6750 §3, RFC 9728
/// §5.1).
pub fn render_challenge(allowlist: &Allowlist, denial: &Denial, challenge: &str) -> Response<ResponseBody> {
    let mut answer = render(allowlist, denial, None);
    if let Ok(value) = HeaderValue::from_str(challenge) {
        answer.headers_mut().insert(http::header::WWW_AUTHENTICATE, value);
    }
    answer
}

/// The RFC 9728 protected resource metadata, answered by the guard itself.
pub fn metadata(document: &serde_json::Value) -> Response<ResponseBody> {
    json_response(200, Bytes::from(document.to_string()))
}

/// The answer to a CORS preflight the guard answers itself: `204` with the fields [`crate::policy::cors`] chose.
pub fn preflight(fields: http::HeaderMap) -> Response<ResponseBody> {
    let mut answer = Response::new(ResponseBody::Full(None));
    *answer.status_mut() = StatusCode::NO_CONTENT;
    *answer.headers_mut() = fields;
    answer
}

/// The header fields of every JSON answer the guard gives itself.
pub const JSON_ANSWER_FIELDS: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("cache-control", "no-store"),
];

fn json_response(status: u16, body: Bytes) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    for (name, value) in JSON_ANSWER_FIELDS {
        resp.headers_mut()
            .insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowlist() -> Allowlist {
        Allowlist::compile(&mcp_guard_config::GuardConfig {
            allowed_hosts: vec!["a.com".into()],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn error_body_shape() {
        let d = Denial::new(Reason::HostNotAllowed, "evil.com");
        let v: serde_json::Value = serde_json::from_slice(&error_body(&allowlist(), &d)).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert!(v["id"].is_null());
        assert_eq!(v["error"]["code"], -32600);
        assert_eq!(v["error"]["data"]["reason"], "host_not_allowed");
        assert_eq!(v["error"]["data"]["received"], "evil.com");
        assert!(
            v["error"]["data"]["hint"]
                .as_str()
                .unwrap()
                .contains("--allow-host evil.com")
        );
    }

    /// MCP 2026-07-28 reserves −32020…−32099 for the specification: the guard answers none of those but
    /// `HeaderMismatch` (−32020) for a header mismatch, and otherwise JSON-RPC's own codes or the
    /// implementation-defined −32000…−32019.
    #[test]
    fn codes_stay_out_of_the_range_mcp_reserves() {
        for reason in Reason::ALL {
            let c = code(reason);
            let standard = [-32700, -32600, -32601, -32602, -32603].contains(&c);
            let implementation_defined = (-32019..=-32000).contains(&c);
            let spec_defined = reason == Reason::McpHeaderMismatch && c == -32020;
            assert!(
                standard || implementation_defined || spec_defined,
                "{reason}: code {c} is not one the MCP 2026-07-28 error-code ranges allow the guard"
            );
        }
        assert_eq!(code(Reason::McpHeaderMismatch), -32020);
        for reason in [
            Reason::RateLimited,
            Reason::TooManyConcurrentRequests,
            Reason::TooManyStreams,
        ] {
            assert_eq!(code(reason), -32010, "{reason}");
        }
        assert_eq!(code(Reason::UpstreamUnavailable), -32603);
    }

    #[test]
    fn render_sets_close_and_retry_after() {
        let a = allowlist();
        let limited = render(&a, &Denial::new(Reason::RateLimited, "1.2.3.4"), Some(3));
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "3");
        assert!(limited.headers().get("connection").is_none());
        let big = render(&a, &Denial::new(Reason::RequestBodyTooLarge, "9"), None);
        assert_eq!(big.status(), 413);
        assert_eq!(big.headers()["connection"], "close");
        assert!(big.headers().get("retry-after").is_none());
    }
}
