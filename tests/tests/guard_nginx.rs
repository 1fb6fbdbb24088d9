//! Production shape: client → nginx (Debian; proxy_pass, `proxy_set_header Host $host`, HTTP/1.1, buffering
//! off) → guard → the MCP Python SDK server at its defaults. The public hostname passes; forged Host and
//! Origin are refused by the guard, and its JSON error reaches the client through nginx intact.

use testkit::http;
use testkit::mcp::{
    ClientKind, Guard, GuardOptions, PyServer, Transport, assert_guard_rejection, initialize_request,
    run_client,
};
use testkit::nginx::Nginx;

const PUBLIC_HOST: &str = "mcp.example.test";

fn stack(transport: Transport) -> (PyServer, Guard, Nginx) {
    let server = PyServer::start(transport).expect("start the Python SDK server");
    // Only the public name: requests reach the guard through nginx, never by its loopback address.
    let guard = GuardOptions::hosts(&[PUBLIC_HOST])
        .start(&server.base_url())
        .expect("start mcp-guard");
    let nginx = Nginx::reverse_proxy(&guard.base_url()).expect("start nginx");
    (server, guard, nginx)
}

#[test]
fn clients_through_nginx_and_the_guard() {
    for transport in [Transport::StreamableHttp, Transport::Sse] {
        let (_server, _guard, nginx) = stack(transport);
        let url = format!("{}{}", nginx.base_url(), transport.path());
        let host = format!("Host: {PUBLIC_HOST}:{}", nginx.port);
        for kind in [ClientKind::Python, ClientKind::TypeScript] {
            let what = format!("{kind:?} client over {transport:?} via nginx and the guard");
            // A page served from the public name itself (same origin as an allowed host) may call it.
            let origin = format!("Origin: http://{PUBLIC_HOST}:{}", nginx.port);
            let run = run_client(kind, transport, &url, &[&host, &origin]).expect("client");
            run.assert_full_session(&what);

            let run = run_client(
                kind,
                transport,
                &url,
                &[&format!("Host: evil.test:{}", nginx.port)],
            )
            .expect("client");
            run.assert_rejected(&format!("{what}, forged Host"), 421, "host_not_allowed");
        }
    }
}

#[test]
fn forgeries_through_nginx_get_the_guards_json_error() {
    let (_server, _guard, nginx) = stack(Transport::StreamableHttp);
    let public = format!("{PUBLIC_HOST}:{}", nginx.port);

    let r = http::raw(nginx.addr(), &initialize_request("/mcp", &public, &[])).expect("request");
    assert_eq!(r.status, 200, "legitimate initialize via nginx: {}", r.text());
    assert!(
        r.text().contains("mcp-guard-e2e"),
        "initialize result: {}",
        r.text()
    );

    let r = http::raw(nginx.addr(), &initialize_request("/mcp", "evil.test", &[])).expect("request");
    assert_guard_rejection(&r, 421, "host_not_allowed", "evil.test", "forged Host via nginx");

    // nginx's own address is not the public name either.
    let own = format!("127.0.0.1:{}", nginx.port);
    let r = http::raw(nginx.addr(), &initialize_request("/mcp", &own, &[])).expect("request");
    assert_guard_rejection(
        &r,
        421,
        "host_not_allowed",
        "127.0.0.1",
        "nginx's loopback address as Host",
    );

    let r = http::raw(
        nginx.addr(),
        &initialize_request("/mcp", &public, &["Origin: http://evil.test"]),
    )
    .expect("request");
    assert_guard_rejection(
        &r,
        403,
        "origin_not_allowed",
        "http://evil.test",
        "forged Origin via nginx",
    );

    let r = http::raw(
        nginx.addr(),
        &initialize_request("/mcp", &public, &["Origin: null"]),
    )
    .expect("request");
    assert_guard_rejection(&r, 403, "origin_not_allowed", "null", "Origin: null via nginx");
}
