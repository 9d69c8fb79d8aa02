//! The decide step alone: what the client and the backend see after each kind of resolution.

use bytes::Bytes;
use http::header;
use http_body_util::BodyExt;

use super::*;
use crate::config::Config;
use crate::ext_authz::{Allowed, Denied};

/// A policy as the config compiler builds it (nothing connects until a check is sent).
fn policy(ext_auth: &str) -> Arc<ExtAuthz> {
    let text = format!(
        r#"
[[listeners]]
name = "l"
address = "127.0.0.1:0"

[[authz_backends]]
name = "authz"
url = "http://127.0.0.1:9"

[[policies]]
name = "p"
target_refs = [{{ kind = "Gateway", name = "l" }}]
ext_auth = {{ backend = "authz", {ext_auth} }}
"#
    );
    let config = Config::from_toml(&text, "test.toml").expect("valid config");
    config.listeners[0].policies[0].clone()
}

fn head() -> Parts {
    let (parts, ()) = http::Request::builder()
        .uri("/v1/chat")
        .header(header::HOST, "api.example.com")
        .body(())
        .expect("request")
        .into_parts();
    parts
}

async fn text(response: Response<ProxyBody>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

#[tokio::test]
async fn a_deny_answers_with_the_servers_status_headers_and_body() {
    let policy = policy("grpc = {}");
    let (mut parts, mut record, mut headers) = (head(), AuthzRecord::default(), Vec::new());
    let denied = Denied {
        status: Some(StatusCode::UNAUTHORIZED),
        headers: vec![(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        body: Bytes::from_static(b"no token"),
    };
    let response = decide(
        &policy,
        Resolution::Deny(denied),
        &mut parts,
        &mut record,
        &mut headers,
    )
    .break_value()
    .expect("a deny ends the request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(text(response).await, "no token");
    assert_eq!(record.outcome, "denied");
}

#[tokio::test]
async fn a_deny_without_a_status_is_403() {
    let policy = policy("grpc = {}");
    let (mut parts, mut record, mut headers) = (head(), AuthzRecord::default(), Vec::new());
    let response = decide(
        &policy,
        Resolution::Deny(Denied::default()),
        &mut parts,
        &mut record,
        &mut headers,
    )
    .break_value()
    .expect("a deny ends the request");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_error_answers_the_policys_status_on_error() {
    let policy = policy("grpc = {}, status_on_error = 503");
    let (mut parts, mut record, mut headers) = (head(), AuthzRecord::default(), Vec::new());
    let error = Resolution::Error {
        reason: "timeout after 200ms".into(),
        response: Denied::default(),
    };
    let response = decide(&policy, error, &mut parts, &mut record, &mut headers)
        .break_value()
        .expect("an error ends the request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(record.outcome, "error");
}

#[test]
fn failure_mode_lets_the_request_through_marked_when_asked() {
    let policy =
        policy("grpc = {}, failure_mode_allow = true, failure_mode_allow_header_add = true");
    let (mut parts, mut record, mut headers) = (head(), AuthzRecord::default(), Vec::new());
    let failed = Resolution::FailureModeAllow {
        reason: "connection refused".into(),
    };
    assert!(decide(&policy, failed, &mut parts, &mut record, &mut headers).is_continue());
    assert_eq!(parts.headers[FAILURE_MODE_ALLOWED_HEADER], "true");
    assert_eq!(record.outcome, "failure_mode_allowed");
}

#[test]
fn an_allow_changes_the_request_and_keeps_its_response_headers() {
    let policy = policy("grpc = {}");
    let (mut parts, mut record, mut headers) = (head(), AuthzRecord::default(), Vec::new());
    let allowed = Allowed {
        headers_to_set: vec![(
            HeaderName::from_static("x-user"),
            HeaderValue::from_static("alice"),
        )],
        response_headers: vec![(
            HeaderName::from_static("x-quota"),
            HeaderValue::from_static("9"),
            AppendAction::AppendIfExistsOrAdd,
        )],
        dynamic_metadata: Some(r#"{"user":"alice"}"#.into()),
        ..Allowed::default()
    };
    decide(
        &policy,
        Resolution::Allow(allowed),
        &mut parts,
        &mut record,
        &mut headers,
    )
    .continue_value()
    .expect("allowed");
    assert_eq!(parts.headers["x-user"], "alice");
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].0, "x-quota");
    assert_eq!(record.outcome, "allowed");
    assert_eq!(record.metadata, [r#"{"user":"alice"}"#]);
}
