//! The ext_authz HTTP transport (Envoy's `http_service`) against an in-process HTTP server.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use support::*;

fn http_policy(backend: SocketAddr, authz: SocketAddr, http: &str, settings: &str) -> String {
    seed_config(
        backend,
        authz,
        &format!(
            r#"
[[policies]]
name = "http-policy"
target_refs = [{{ kind = "Gateway", name = "gw" }}]
[policies.ext_auth]
backend = "authz"
http = {{ {http} }}
{settings}
"#
        ),
    )
}

fn reply(status: u16, headers: &[(&str, &str)], body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::builder().status(status);
    for (k, v) in headers {
        resp = resp.header(*k, *v);
    }
    resp.body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid request")
}

#[tokio::test]
async fn allow_copies_allowed_upstream_headers_and_honours_headers_to_remove() {
    let authz = MockHttpAuthz::start(|_| {
        reply(
            200,
            &[
                ("x-auth-user", "alice"),
                ("x-not-allowed", "dropped"),
                ("x-envoy-auth-headers-to-remove", "x-secret, host"),
                ("x-client-note", "ok"),
            ],
            "",
        )
    })
    .await;
    let backend = start_backend().await;
    let gw = start_gateway(&http_policy(
        backend,
        authz.addr,
        r#"path_prefix = "/authz", allowed_upstream_headers = ["x-auth-user"], allowed_client_headers_on_success = ["x-client-note"]"#,
        "",
    ))
    .await;

    let resp = send(seed_post(
        gw,
        "/openai?q=1",
        &[
            ("authorization", "Bearer t"),
            ("x-secret", "s"),
            ("x-other", "o"),
        ],
    ))
    .await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.backend_saw("x-auth-user").as_deref(), Some("alice"));
    assert_eq!(resp.backend_saw("x-not-allowed"), None);
    assert_eq!(resp.backend_saw("x-secret"), None);
    assert_eq!(resp.backend_saw("host"), Some(gw.to_string()));
    assert_eq!(resp.headers["x-client-note"], "ok");

    let seen = authz.requests().pop().unwrap();
    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(seen.uri, "/authz/openai?q=1");
    assert_eq!(seen.headers["host"], gw.to_string().as_str());
    assert_eq!(seen.headers["authorization"], "Bearer t");
    assert_eq!(seen.headers["content-length"], "0");
    assert!(
        !seen.headers.contains_key("x-other"),
        "only allowed headers are sent"
    );
    assert!(seen.body.is_empty());
}

#[tokio::test]
async fn allowed_headers_and_body_are_sent() {
    let authz = MockHttpAuthz::start(|_| reply(200, &[], "")).await;
    let backend = start_backend().await;
    let gw = start_gateway(&http_policy(
        backend,
        authz.addr,
        "",
        "allowed_headers = [\"x-ext-authz\"]\nwith_request_body = { max_request_bytes = 16, allow_partial_message = true }",
    ))
    .await;
    let resp = send(seed_post(
        gw,
        "/openai",
        &[("x-ext-authz", "allow"), ("x-other", "o")],
    ))
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    let seen = authz.requests().pop().unwrap();
    assert_eq!(seen.headers["x-ext-authz"], "allow");
    assert!(!seen.headers.contains_key("x-other"));
    assert_eq!(seen.body, SEED_BODY.as_bytes()[..16]);
    assert_eq!(seen.headers["x-envoy-auth-partial-body"], "true");
}

#[tokio::test]
async fn a_non_200_answer_is_passed_to_the_client() {
    let authz = MockHttpAuthz::start(|_| {
        reply(
            403,
            &[
                ("content-type", "text/plain; charset=utf-8"),
                ("x-ext-authz-check-result", "denied"),
            ],
            "denied by ext_authz for not found header `x-ext-authz: allow` in the request",
        )
    })
    .await;
    let backend = start_backend().await;
    let gw = start_gateway(&http_policy(backend, authz.addr, "", "")).await;
    let resp = send(seed_post(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.text(), DENY_BODY);
    assert_eq!(resp.headers["x-ext-authz-check-result"], "denied");
    assert_eq!(resp.headers["content-type"], "text/plain; charset=utf-8");
}

#[tokio::test]
async fn allowed_client_headers_limit_what_a_denial_carries() {
    let authz = MockHttpAuthz::start(|_| {
        reply(
            401,
            &[
                ("www-authenticate", "Bearer"),
                ("x-internal", "secret"),
                ("x-shown", "1"),
            ],
            "login",
        )
    })
    .await;
    let backend = start_backend().await;
    let gw = start_gateway(&http_policy(
        backend,
        authz.addr,
        r#"allowed_client_headers = ["x-shown"]"#,
        "",
    ))
    .await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.text(), "login");
    assert_eq!(resp.headers["www-authenticate"], "Bearer");
    assert_eq!(resp.headers["x-shown"], "1");
    assert!(!resp.headers.contains_key("x-internal"));
}

#[tokio::test]
async fn a_5xx_answer_is_an_error_under_the_failure_mode() {
    let authz = MockHttpAuthz::start(|_| reply(503, &[], "overloaded")).await;
    let backend = start_backend().await;
    let closed = start_gateway(&http_policy(backend, authz.addr, "", "")).await;
    let resp = send(get(closed, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(
        resp.body.is_empty(),
        "the server's 5xx body is not passed on"
    );

    let open = start_gateway(&http_policy(
        backend,
        authz.addr,
        "",
        "failure_mode_allow = true\nfailure_mode_allow_header_add = true",
    ))
    .await;
    let resp = send(get(open, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.backend_saw("x-envoy-auth-failure-mode-allowed")
            .as_deref(),
        Some("true")
    );
}

#[tokio::test]
async fn a_denial_with_an_oversized_body_stays_a_denial_under_failure_mode_allow() {
    let authz = MockHttpAuthz::start(|_| {
        Response::builder()
            .status(403)
            .header("x-reason", "too-big")
            .body(Full::new(Bytes::from(vec![b'x'; 2 << 20])))
            .unwrap()
    })
    .await;
    let backend = start_backend().await;
    let gw = start_gateway(&http_policy(
        backend,
        authz.addr,
        "",
        "timeout = \"5s\"\nfailure_mode_allow = true",
    ))
    .await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.headers["x-reason"], "too-big");
    assert_eq!(resp.headers["content-length"], (1 << 20).to_string());
    assert_eq!(resp.body.len(), 1 << 20, "truncated to the 1 MiB limit");
    assert!(resp.body.iter().all(|b| *b == b'x'));
}

#[tokio::test]
async fn a_denial_whose_body_is_cut_off_stays_a_denial_under_failure_mode_allow() {
    // Promises 100 bytes, sends 5 and closes the connection.
    let authz = raw_backend(
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 100\r\nwww-authenticate: Bearer\r\n\r\nshort",
    )
    .await;
    let backend = start_backend().await;
    let gw = start_gateway(&http_policy(
        backend,
        authz,
        "",
        "failure_mode_allow = true",
    ))
    .await;
    let resp = send(get(gw, "/openai", &[])).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers["www-authenticate"], "Bearer");
    assert!(resp.body.is_empty(), "a cut-off body is not passed on");
}
