//! The built-in default in Envoy's HTTP mode behaves as Istio's ext-authz test service.

use e2e::{DENY_BODY, http_request, start_default};

#[tokio::test]
async fn allows_with_the_header_and_echoes_the_override() {
    let server = start_default().await;
    let reply = http_request(
        server.http,
        "POST",
        "/openai?x=1",
        &[
            ("x-ext-authz", "allow"),
            ("x-ext-authz-additional-header-override", "mine"),
        ],
        "hello",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-ext-authz-check-result"), "allowed");
    assert_eq!(
        reply.header("x-ext-authz-additional-header-override"),
        "mine"
    );
    let received = reply.header("x-ext-authz-check-received");
    assert!(received.starts_with("POST "), "{received}");
    assert!(received.contains("/openai?x=1"), "{received}");
    assert!(received.contains("X-Ext-Authz:[allow]"), "{received}");
    assert!(received.ends_with("body: [hello]"), "{received}");
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn denies_with_403_text_plain_and_the_exact_body() {
    let server = start_default().await;
    let reply = http_request(server.http, "GET", "/anything", &[], "").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(reply.header("x-ext-authz-check-result"), "denied");
    assert_eq!(reply.body, DENY_BODY.as_bytes());
}

#[tokio::test]
async fn value_is_case_sensitive_and_no_principal_fallback() {
    let server = start_default().await;
    let reply = http_request(server.http, "GET", "/", &[("x-ext-authz", "ALLOW")], "").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, DENY_BODY.as_bytes());
}

#[tokio::test]
async fn any_method_and_path_is_checked() {
    let server = start_default().await;
    for (method, path) in [("DELETE", "/a/b/c"), ("PUT", "/"), ("PATCH", "/x?y=z")] {
        let reply = http_request(server.http, method, path, &[("x-ext-authz", "allow")], "").await;
        assert_eq!(reply.status, 200, "{method} {path}");
    }
}
