//! The built-in default over real gRPC sockets behaves as Istio's ext-authz test service.

use e2e::{DENY_BODY, start_default, v2_check, v2_client, v3_check, v3_client, v3_headers};
use extauthz_proto::{v2, v3};

const SA_A: &str = "spiffe://cluster.local/ns/default/sa/a";
const SA_B: &str = "spiffe://cluster.local/ns/default/sa/b";

fn ok(response: &v3::CheckResponse) -> &v3::OkHttpResponse {
    match &response.http_response {
        Some(v3::check_response::HttpResponse::OkResponse(ok)) => ok,
        other => panic!("expected ok_response, got {other:?}"),
    }
}

fn denied(response: &v3::CheckResponse) -> &v3::DeniedHttpResponse {
    match &response.http_response {
        Some(v3::check_response::HttpResponse::DeniedResponse(denied)) => denied,
        other => panic!("expected denied_response, got {other:?}"),
    }
}

fn code(response: &v3::CheckResponse) -> i32 {
    response.status.as_ref().map_or(-1, |s| s.code)
}

/// Asserts the three Istio headers, returning the check-received value.
fn istio_headers(headers: &[(String, String)], result: &str) -> String {
    assert_eq!(headers.len(), 3, "{headers:?}");
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
    };
    assert_eq!(get("x-ext-authz-check-result"), result);
    assert_eq!(
        get("x-ext-authz-additional-header-override"),
        "grpc-additional-header-override-value"
    );
    get("x-ext-authz-check-received")
}

#[tokio::test]
async fn v3_allows_with_the_header_and_adds_the_three_headers() {
    let server = start_default().await;
    let mut client = v3_client(server.grpc).await;
    let response = client
        .check(v3_check(&[("x-ext-authz", "allow")], ""))
        .await
        .expect("Check succeeds")
        .into_inner();
    assert_eq!(code(&response), 0);
    let received = istio_headers(&v3_headers(&ok(&response).headers), "allowed");
    assert!(received.contains(r#"key:"x-ext-authz""#), "{received}");
    assert!(received.contains(r#"path:"/openai""#), "{received}");
    assert!(!received.contains('\n'));
}

#[tokio::test]
async fn v3_denies_without_the_header_with_403_and_the_exact_body() {
    let server = start_default().await;
    let mut client = v3_client(server.grpc).await;
    let response = client
        .check(v3_check(&[("content-type", "application/json")], ""))
        .await
        .expect("a deny is a successful RPC")
        .into_inner();
    assert_eq!(code(&response), 7);
    let denied = denied(&response);
    assert_eq!(denied.status.as_ref().map(|s| s.code), Some(403));
    assert_eq!(denied.body, DENY_BODY);
    assert_eq!(denied.body.len(), 76);
    istio_headers(&v3_headers(&denied.headers), "denied");
}

#[tokio::test]
async fn v3_header_value_is_case_sensitive() {
    let server = start_default().await;
    let mut client = v3_client(server.grpc).await;
    let response = client
        .check(v3_check(&[("x-ext-authz", "Allow")], ""))
        .await
        .expect("Check succeeds")
        .into_inner();
    assert_eq!(code(&response), 7);
    assert_eq!(denied(&response).body, DENY_BODY);
}

#[tokio::test]
async fn v3_principal_fallback_when_the_header_is_absent() {
    let server = start_default().await;
    let mut client = v3_client(server.grpc).await;
    let allowed = client
        .check(v3_check(&[], SA_A))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(code(&allowed), 0);
    istio_headers(&v3_headers(&ok(&allowed).headers), "allowed");
    let other = client
        .check(v3_check(&[], SA_B))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(code(&other), 7);
}

#[tokio::test]
async fn v3_header_decides_alone_when_present() {
    let server = start_default().await;
    let mut client = v3_client(server.grpc).await;
    let response = client
        .check(v3_check(&[("x-ext-authz", "deny")], SA_A))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(
        code(&response),
        7,
        "a wrong header value denies even for sa/a"
    );
}

#[tokio::test]
async fn v3_empty_check_request_is_decided_by_the_rules() {
    let server = start_default().await;
    let mut client = v3_client(server.grpc).await;
    let response = client
        .check(v3::CheckRequest::default())
        .await
        .expect("an empty request is still decided")
        .into_inner();
    assert_eq!(code(&response), 7);
    assert_eq!(denied(&response).body, DENY_BODY);
}

#[tokio::test]
async fn v3_oversized_attributes_are_reported_as_too_long() {
    let server = start_default().await;
    let mut client = v3_client(server.grpc).await;
    let big = "x".repeat(70_000);
    let response = client
        .check(v3_check(&[("x-ext-authz", "allow"), ("x-big", &big)], ""))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(code(&response), 0);
    assert_eq!(
        istio_headers(&v3_headers(&ok(&response).headers), "allowed"),
        "<too-long>"
    );
}

#[tokio::test]
async fn v2_allows_and_denies_like_v3() {
    let server = start_default().await;
    let mut client = v2_client(server.grpc).await;
    let allowed = client
        .check(v2_check(&[("x-ext-authz", "allow")], ""))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(allowed.status.as_ref().map(|s| s.code), Some(0));
    let Some(v2::check_response::HttpResponse::OkResponse(ok)) = &allowed.http_response else {
        panic!("expected ok_response: {allowed:?}");
    };
    let headers: Vec<(String, String)> = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    istio_headers(&headers, "allowed");

    let denied = client
        .check(v2_check(&[], ""))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(denied.status.as_ref().map(|s| s.code), Some(7));
    let Some(v2::check_response::HttpResponse::DeniedResponse(denied)) = &denied.http_response
    else {
        panic!("expected denied_response: {denied:?}");
    };
    assert_eq!(denied.status.as_ref().map(|s| s.code), Some(403));
    assert_eq!(denied.body, DENY_BODY);

    let fallback = client
        .check(v2_check(&[], SA_A))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(fallback.status.as_ref().map(|s| s.code), Some(0));
}
